"""Demand and protocol through the commands and specs: defaults, records, draws, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from typer.testing import CliRunner

from agents import UnknownControllerError
from experiments.cli import app
from experiments.compare import compare
from experiments.layout import load_runs
from experiments.spec import SpecError, load, parse
from experiments.workflows import plan_compare
from networks import Scenario
from tests.conftest import assert_bad_input

runner = CliRunner()
TINY = ["--network", "grid-1x1", "--end", "600"]


def compare_json(tmp_path: Path, name: str, *args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["compare", *TINY, "-c", "fixed", "--json",
                                 "--out", str(tmp_path / name), *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def without_wall(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in doc["runs"]]


def test_compare_resamples_by_default_and_says_so(tmp_path: Path) -> None:
    doc = compare_json(tmp_path, "a", "--seeds", "3")
    assert doc["demand"] == {"mode": "resample", "scale": 1.0, "bin_s": 60}
    assert doc["protocol"] == "greenphase"
    vehicles = [r["vehicles"] for r in doc["runs"]]
    assert len(set(vehicles)) == 3, vehicles  # every seed its own traffic
    again = compare_json(tmp_path, "b", "--seeds", "3", "--demand", "resample")
    assert without_wall(again) == without_wall(doc)  # the draws are the seed's
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["demand"] == {"mode": "resample", "scale": 1.0, "bin_s": 60}
    assert manifest["protocol"] == "greenphase"
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["demand"] == doc["demand"]


def test_the_table_title_names_the_demand(tmp_path: Path) -> None:
    result = runner.invoke(app, ["compare", *TINY, "-c", "fixed", "--seeds", "1",
                                 "--demand", "resample,scale=0.5", "--out", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    assert "demand resample,scale=0.5" in " ".join(result.stdout.split())


def test_fixed_demand_is_the_route_files_as_before(grid1x1: Scenario, tmp_path: Path) -> None:
    doc = compare_json(tmp_path, "f", "--seeds", "1", "--demand", "fixed")
    assert doc["demand"]["mode"] == "fixed"
    scenario = grid1x1.__class__(grid1x1.name, grid1x1.net_file, grid1x1.route_files,
                                 grid1x1.begin, 600)
    before = compare(scenario, ["fixed"], [0])  # the library's default: fixed demand
    assert without_wall(doc) == without_wall(before.to_json())


def test_resco_protocol_is_recorded_and_decides_every_10_s(tmp_path: Path) -> None:
    doc = compare_json(tmp_path, "r", "--seeds", "1", "--protocol", "resco",
                       "--demand", "fixed")
    assert doc["protocol"] == "resco"
    signals = json.loads((tmp_path / "r" / "manifest.json").read_text())["spec"]["signals"]
    assert signals["protocol"] == "resco" and signals["decision_interval"] == 10.0
    assert (signals["yellow"], signals["min_green"]) == (3.0, 7.0)
    given = compare_json(tmp_path, "g", "--seeds", "1", "--protocol", "resco",
                         "--decision-interval", "20", "--demand", "fixed")
    signals = json.loads((tmp_path / "g" / "manifest.json").read_text())["spec"]["signals"]
    assert given["protocol"] == "resco" and signals["decision_interval"] == 20.0


@pytest.mark.parametrize(("args", "words"), [
    (["--demand", "sometimes"], ("--demand", "sometimes")),
    (["--demand", "resample,scale=0"], ("--demand", "scale")),
    (["--demand", "scale=-1"], ("--demand", "scale")),
    (["--protocol", "nema"], ("--protocol", "nema")),
])
@pytest.mark.parametrize("command", ["compare", "tune", "train"])
def test_bad_demand_or_protocol_is_one_line(command: str, args: list[str],
                                            words: tuple[str, ...]) -> None:
    head = [command, "max-pressure"] if command == "tune" else [command]
    assert_bad_input(runner.invoke(app, [*head, *TINY, *args]), *words)


SPEC = {"name": "d", "network": "grid-1x1", "horizon_s": 300, "controllers": ["fixed"],
        "seeds": 2}


def write_spec(path: Path, **tables: Any) -> Path:
    path.write_text(tomli_w.dumps({**SPEC, **tables}))
    return path


def test_a_resample_spec_runs_and_hashes_apart_from_fixed(tmp_path: Path) -> None:
    fixed = load(write_spec(tmp_path / "fixed.toml"))
    explicit = load(write_spec(tmp_path / "explicit.toml", demand={"mode": "fixed"},
                               signals={"protocol": "greenphase"}))
    resample = load(write_spec(tmp_path / "resample.toml", demand={"mode": "resample"}))
    # the keys a spec gained leave the hashes of the specs without them as they were
    assert [u.hash for u in explicit.units] == [u.hash for u in fixed.units]
    assert {u.hash for u in resample.units}.isdisjoint(u.hash for u in fixed.units)
    assert resample.units[0].options.demand.mode == "resample"
    result = runner.invoke(app, ["run", str(tmp_path / "resample.toml"), "--json",
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    runs = load_runs(tmp_path / "out")
    vehicles = dict(zip(runs["seed"], runs["vehicles"], strict=True))
    assert vehicles[0] != vehicles[1]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["demand"]["mode"] == "resample"
    assert "Demand: resample" in (tmp_path / "out" / "report.md").read_text()


def test_a_spec_protocol_fills_in_what_the_spec_leaves_out(tmp_path: Path) -> None:
    plan = load(write_spec(tmp_path / "p.toml", signals={"protocol": "resco", "min_green": 9.0}))
    options = plan.units[0].options
    assert (options.protocol, options.decision_interval, options.min_green) == ("resco", 10.0, 9.0)
    assert (options.yellow, options.all_red, options.detector_length) == (3.0, 0.0, 200.0)
    swept = parse(tomli_w.dumps({**SPEC, "sweep": {"grid": {
        "signals.protocol": ["greenphase", "resco"]}}}), tmp_path / "s.toml")
    intervals = {u.options.protocol: u.options.decision_interval for u in swept.units}
    assert intervals == {"greenphase": 5.0, "resco": 10.0}
    with pytest.raises(SpecError, match="signals.protocol"):
        load(write_spec(tmp_path / "bad.toml", signals={"protocol": "nema"}))
    with pytest.raises(SpecError, match="demand.mode"):
        load(write_spec(tmp_path / "bad.toml", demand={"mode": "sometimes"}))


@pytest.fixture
def tuned_elsewhere(tmp_path: Path) -> Path:
    """A tuned:DIR of max-pressure, tuned on grid-2x2."""
    folder = tmp_path / "tuned"
    folder.mkdir()
    (folder / "params.toml").write_text(tomli_w.dumps({
        "controller": "max-pressure", "network": "grid-2x2",
        "parameters": {"min_hold": 10.0}, "demand": {"seeds": [10000]}}))
    return folder


def test_tuned_on_another_network_fails_before_any_run(
    tuned_elsewhere: Path, grid1x1: Scenario, tmp_path: Path
) -> None:
    # the plan (which simulates nothing) and the spec's validation refuse it
    with pytest.raises(UnknownControllerError, match="not 'grid-1x1'"):
        plan_compare(grid1x1, ["fixed", f"tuned:{tuned_elsewhere}"], 1, tmp_path / "c",
                     decision_interval=None, faults="", cleaning="none")
    with pytest.raises(SpecError, match="controllers: .*not 'grid-1x1'"):
        load(write_spec(tmp_path / "t.toml", controllers=[f"tuned:{tuned_elsewhere}"]))
    result = runner.invoke(app, ["compare", *TINY, "-c", f"tuned:{tuned_elsewhere}",
                                 "--out", str(tmp_path / "cli")])
    assert_bad_input(result, "tuned on network 'grid-2x2', not 'grid-1x1'")


def test_learned_controllers_train_on_the_spec_demand(tmp_path: Path) -> None:
    plan = load(write_spec(tmp_path / "l.toml", controllers=["fixed", "dqn"],
                           demand={"mode": "resample", "scale": 1.1}))
    (learned,) = [u for u in plan.units if u.learned and u.seed == 0]
    simulation = learned.train_spec().simulation
    # training episodes seed from 100000: under resample they draw training demand
    assert (simulation.demand.mode, simulation.demand.scale) == ("resample", 1.1)
