"""Tuning classic controllers: the search, its folder, ``tuned:DIR`` and bad input."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from agents import UnknownControllerError, make_controller
from agents.classic import MaxPressure
from agents.tuned import TunedParamsError, build, read_tuned, tuned_controller
from experiments.cli import app
from experiments.executor import InProcessExecutor
from experiments.runner import run_episode
from experiments.tune import SPACES, TUNING_SEED_FLOOR, tune, tuning_seeds
from networks import Scenario
from networks.demand import Demand
from simulator.options import SimulationOptions
from tests.conftest import assert_bad_input

runner = CliRunner()
SHORT = ["--network", "grid-1x1", "--end", "300"]


@pytest.fixture(scope="module")
def tiny(grid1x1: Scenario) -> Scenario:
    """One signal, five simulated minutes."""
    return dataclasses.replace(grid1x1, end=300)


@pytest.fixture(scope="module")
def tuned_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A max-pressure search of three trials, through the command line."""
    out = tmp_path_factory.mktemp("tuned") / "mp"
    result = runner.invoke(app, ["tune", "max-pressure", *SHORT, "--trials", "3",
                                 "--workers", "1", "--seeds", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_tune_writes_params_trials_and_a_plot(tuned_dir: Path) -> None:
    doc = tomllib.loads((tuned_dir / "params.toml").read_text())
    assert doc["controller"] == "max-pressure" and doc["network"] == "grid-1x1"
    assert doc["demand"]["seeds"] == [TUNING_SEED_FLOOR]
    assert set(doc["parameters"]) == set(SPACES["max-pressure"])
    trials = pd.read_parquet(tuned_dir / "trials.parquet")
    assert trials["number"].tolist() == [0, 1, 2]
    assert {"min_hold", "value", "state", "wall_s"} <= set(trials.columns)
    assert trials.loc[0, "min_hold"] == MaxPressure().min_hold  # the defaults come first
    assert doc["search"]["value"] == trials["value"].min()
    for row in trials[trials["repeat_of"] >= 0].to_dict("records"):  # not run again
        assert row["value"] == trials.loc[row["repeat_of"], "value"] and row["wall_s"] == 0
    assert (tuned_dir / "plots" / "search.png").stat().st_size > 0


def test_tuned_dir_builds_the_controller_with_the_tuned_values(tuned_dir: Path,
                                                               tiny: Scenario) -> None:
    doc = read_tuned(tuned_dir)
    ctrl = make_controller(f"tuned:{tuned_dir}")
    assert isinstance(ctrl, MaxPressure)
    assert ctrl.min_hold == doc.parameters["min_hold"]
    # the tuned controller on a tuning seed, with the demand the search ran on (by default
    # a draw of that seed), gives the value the search measured
    assert doc.demand["mode"] == "resample"
    demand = Demand(**{k: doc.demand[k] for k in ("mode", "scale", "bin_s")})
    result = run_episode(tiny, f"tuned:{tuned_dir}", TUNING_SEED_FLOOR,
                         SimulationOptions(demand=demand))
    assert result.kpis["mean_delay_s"] == pytest.approx(doc.search["value"])


def test_compare_takes_tuned_dir(tuned_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["compare", *SHORT, "-c", f"max-pressure,tuned:{tuned_dir}",
                                 "--seeds", "1", "--json", "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)["runs"]
    assert {r["controller"] for r in runs} == {"fixed", "max-pressure", f"tuned:{tuned_dir}"}


def test_the_same_search_twice_gives_the_same_trials(tiny: Scenario, tmp_path: Path) -> None:
    found = [tune("sotl", tiny, tmp_path / str(k), trials=3, workers=2, seeds=1,
                  executor=InProcessExecutor())
             for k in range(2)]
    first, second = (r.trials.drop(columns="wall_s") for r in found)
    pd.testing.assert_frame_equal(first, second)
    assert found[0].tuned.parameters == found[1].tuned.parameters


def test_tuning_seeds_are_never_evaluation_seeds() -> None:
    assert min(tuning_seeds(5)) == TUNING_SEED_FLOOR > 1000


def test_tuned_parameters_are_checked() -> None:
    with pytest.raises(TunedParamsError, match="min_hold"):
        build("max-pressure", {"min_hold": -1.0})
    with pytest.raises(TunedParamsError, match="hold: unknown key"):
        build("max-pressure", {"hold": 10.0})
    with pytest.raises(TunedParamsError, match="no parameters"):
        build("fixed", {})


def test_a_tuned_dir_of_another_network_is_refused(tuned_dir: Path) -> None:
    with pytest.raises(TunedParamsError, match="tuned on network 'grid-1x1', not 'cologne1'"):
        tuned_controller(tuned_dir, "cologne1")
    assert isinstance(tuned_controller(tuned_dir, "grid-1x1"), MaxPressure)


def test_tuned_errors_are_unknown_controller_errors(tmp_path: Path) -> None:
    with pytest.raises(UnknownControllerError, match="no params.toml"):
        make_controller(f"tuned:{tmp_path}")


def test_compare_with_a_folder_without_params_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["compare", *SHORT, "-c", f"tuned:{tmp_path}", "--seeds", "1"])
    assert_bad_input(result, "no params.toml")


def test_compare_on_another_network_is_one_line(tuned_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["compare", "--network", "grid-2x2", "--end", "60", "-c",
                                 f"tuned:{tuned_dir}", "--seeds", "1",
                                 "--out", str(tmp_path / "c")])
    # refused when the controllers are checked, before any run
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "tuned on network 'grid-1x1', not 'grid-2x2'" in errors[0]


@pytest.mark.parametrize(("args", "words"), [
    (["tune", "fixed", *SHORT], ("cannot tune 'fixed'",)),
    (["tune", "max-pressure", *SHORT, "--trials", "0"], ("--trials",)),
    (["tune", "max-pressure", *SHORT, "--demand", "sometimes"], ("--demand",)),
    (["tune", "max-pressure", "--network", "nowhere"], ("nowhere",)),
])
def test_bad_tune_input_is_one_line(args: list[str], words: tuple[str, ...]) -> None:
    assert_bad_input(runner.invoke(app, args), *words)


def test_tune_refuses_a_folder_with_files(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["tune", "max-pressure", *SHORT, "--out", str(tmp_path)])
    assert_bad_input(result, "not empty", "--overwrite")


def test_a_timeout_stops_after_the_batch_that_passes_it(tiny: Scenario, tmp_path: Path) -> None:
    result = tune("max-pressure", tiny, tmp_path / "t", trials=10, workers=2, seeds=1,
                  timeout=1e-6, executor=InProcessExecutor())
    assert result.trials["number"].tolist() == [0, 1]
    assert result.tuned.search["trials"] == 2


def test_defaults_the_space_cannot_hold_are_measured_and_kept_unless_beaten(
        tiny: Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agents.classic import Actuated
    from experiments import tune as tune_module

    # actuated's green bounds default to the network program's own: no point of the space
    assert tune_module.exact_defaults("max-pressure", SPACES["max-pressure"]) is None
    own = tune_module.exact_defaults("actuated", SPACES["actuated"])
    assert own is not None and "min_dur" not in own and own["max_gap"] == Actuated().params.max_gap
    found = tune("actuated", tiny, tmp_path / "a", trials=2, seeds=1,
                 executor=InProcessExecutor())
    trials = found.trials
    assert trials["number"].tolist() == [-1, 0, 1]
    untuned = run_episode(tiny, "actuated", TUNING_SEED_FLOOR, SimulationOptions())
    assert trials.loc[0, "value"] == pytest.approx(untuned.kpis["mean_delay_s"])
    assert found.tuned.search["default_value"] == trials.loc[0, "value"]
    assert found.tuned.search["value"] <= trials.loc[0, "value"]
    # made to win, the exact defaults are what the folder keeps: tuned is then untuned
    monkeypatch.setattr(tune_module._Runs, "value", lambda self, number: (
        (1.0 if number == tune_module.DEFAULTS else 2.0), 0.0, ""))
    kept = tune("actuated", tiny, tmp_path / "b", trials=2, seeds=1,
                executor=InProcessExecutor())
    assert kept.tuned.search["trial"] == -1 and kept.tuned.parameters == own
    ctrl = tuned_controller(tmp_path / "b", "grid-1x1")
    assert isinstance(ctrl, Actuated) and ctrl.params == Actuated().params
