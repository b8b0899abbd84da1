"""The command line: results, JSON contract, determinism, and one clear line for bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from experiments.cli import app
from networks import Scenario, names
from simulator.sumo import sumo_binary

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def user_net_args(sc: Scenario, end: int = 300) -> list[str]:
    return ["--net", str(sc.net_file), "--routes", str(sc.route_files[0]), "--end", str(end)]


def assert_bad_input(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], lines[0]


def test_compare_json_follows_the_schema_and_writes_the_layout(
    grid2x2_short: Scenario, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = invoke("compare", *user_net_args(grid2x2_short),
                    "--controllers", "max-pressure,sotl", "--seeds", "2",
                    "--json", "--out", str(out))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["begin_s"] == 0 and doc["end_s"] == 300
    run_keys = {"controller", "seed", "mean_delay_s", "mean_travel_time_s",
                "mean_waiting_time_s", "throughput_veh_h", "mean_queue_veh", "vehicles",
                "unfinished", "not_inserted", "wall_s"}
    assert len(doc["runs"]) == 6  # fixed is added as the reference
    for run in doc["runs"]:
        assert run_keys <= set(run)
    summary = {row["controller"]: row for row in doc["summary"]}
    assert list(summary) == ["fixed", "max-pressure", "sotl"]
    assert summary["fixed"]["delay_vs_fixed_pct"] == 0.0
    for row in summary.values():
        assert {"seeds", "mean_delay_s", "ci95_delay_s", "delay_vs_fixed_pct"} <= set(row)
        assert row["seeds"] == 2 and row["ci95_delay_s"] >= 0
    for name in ("spec.toml", "metrics.parquet", "summary.json", "trips.parquet",
                 "plots/delay.png", "log.txt"):
        assert (out / name).is_file(), name
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert len(metrics) == 6
    assert json.loads((out / "summary.json").read_text())["summary"] == doc["summary"]


def test_same_seed_same_numbers(grid2x2_short: Scenario, tmp_path: Path) -> None:
    docs = []
    for i in range(2):
        result = invoke("compare", *user_net_args(grid2x2_short), "-c", "fixed,max-pressure",
                        "--seeds", "1", "--json", "--out", str(tmp_path / str(i)))
        assert result.exit_code == 0, result.output
        docs.append(json.loads(result.stdout))
    strip = [[{k: v for k, v in r.items() if k != "wall_s"} for r in d["runs"]] for d in docs]
    assert strip[0] == strip[1]


def test_compare_prints_a_table(grid2x2_short: Scenario, tmp_path: Path) -> None:
    result = invoke("compare", *user_net_args(grid2x2_short), "-c", "fixed,random",
                    "--seeds", "1", "--out", str(tmp_path / "t"))
    assert result.exit_code == 0, result.output
    assert "fixed" in result.stdout and "random" in result.stdout
    assert "delay" in result.stdout


def test_networks_list_names_every_network() -> None:
    result = invoke("networks", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == names()
    cologne8 = next(r for r in rows if r["name"] == "cologne8")
    assert (cologne8["signals"], cologne8["controlled_lanes"]) == (8, 33)
    assert cologne8["vehicles"] == 2046
    assert (cologne8["begin_s"], cologne8["end_s"]) == (25200, 28800)


# ----------------------------------------------------------------- bad input
def test_unknown_network() -> None:
    assert_bad_input(invoke("compare", "--network", "atlantis"), "unknown network", "atlantis")


def test_unknown_controller(grid2x2_short: Scenario) -> None:
    result = invoke("compare", *user_net_args(grid2x2_short), "-c", "fixed,magic")
    assert_bad_input(result, "unknown controller", "magic")


def test_missing_net_file(tmp_path: Path, grid2x2_short: Scenario) -> None:
    result = invoke("compare", "--net", str(tmp_path / "nope.net.xml"),
                    "--routes", str(grid2x2_short.route_files[0]))
    assert_bad_input(result, "net file not found", "nope.net.xml")


def test_malformed_net_file(tmp_path: Path, grid2x2_short: Scenario) -> None:
    bad = tmp_path / "bad.net.xml"
    bad.write_text("<net><edge id='a'>")
    result = invoke("compare", "--net", str(bad), "--routes", str(grid2x2_short.route_files[0]))
    assert_bad_input(result, "malformed net file", "bad.net.xml")


def test_not_a_net_file(tmp_path: Path, grid2x2_short: Scenario) -> None:
    result = invoke("compare", "--net", str(grid2x2_short.route_files[0]),
                    "--routes", str(grid2x2_short.route_files[0]))
    assert_bad_input(result, "not a SUMO net file")


def test_route_file_that_does_not_match_the_net(tmp_path: Path, grid2x2_short: Scenario) -> None:
    routes = tmp_path / "other.rou.xml"
    routes.write_text('<routes><trip id="x" depart="0" from="nowhere" to="elsewhere"/></routes>')
    result = invoke("compare", "--net", str(grid2x2_short.net_file), "--routes", str(routes))
    assert_bad_input(result, "does not match", "unknown edge")


def test_net_without_traffic_lights(tmp_path: Path, grid2x2_short: Scenario) -> None:
    net = tmp_path / "plain.net.xml"
    subprocess.run(
        [sumo_binary("netgenerate"), "--grid", "--grid.number", "2", "--tls.guess", "false",
         "--default-junction-type", "priority", "-o", str(net)],
        check=True, capture_output=True,
    )
    routes = tmp_path / "plain.rou.xml"
    routes.write_text("<routes/>")
    result = invoke("compare", "--net", str(net), "--routes", str(routes))
    assert_bad_input(result, "no traffic lights")


@pytest.mark.parametrize("seeds", ["0", "-3"])
def test_seeds_must_be_positive(seeds: str) -> None:
    assert_bad_input(invoke("compare", "--seeds", seeds), "--seeds")


def test_begin_after_end(grid2x2_short: Scenario) -> None:
    result = invoke("compare", "--net", str(grid2x2_short.net_file),
                    "--routes", str(grid2x2_short.route_files[0]),
                    "--begin", "500", "--end", "100")
    assert_bad_input(result, "begin", "before end")
    assert_bad_input(invoke("compare", "-n", "cologne1", "--begin", "29000"), "before end")


def test_unwritable_out(tmp_path: Path, grid2x2_short: Scenario) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = invoke("compare", *user_net_args(grid2x2_short), "-c", "fixed",
                    "--out", str(blocker / "results"))
    assert_bad_input(result, "cannot write results", "a-file")
