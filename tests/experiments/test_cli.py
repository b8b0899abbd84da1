"""The command line: results, JSON contract, determinism, and one clear line for bad input."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import experiments.cli as cli_package
from experiments.cli import app
from networks import Scenario, names
from simulator.sumo import sumo_binary
from tests.conftest import assert_bad_input

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def user_net_args(sc: Scenario, end: int = 300) -> list[str]:
    return ["--net", str(sc.net_file), "--routes", str(sc.route_files[0]), "--end", str(end)]


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


# ----------------------------------------------------------------- usage errors are one line
@pytest.mark.parametrize(("args", "words"), [
    (["compare", "--seeds", "x"], ["--seeds", "integer"]),
    (["compare", "--decision-interval", "0"], ["--decision-interval", "greater than 0"]),
    (["compare", "--cleaning", "mop"], ["--cleaning", "'mop'", "zero-flag"]),
    (["compare", "--bogus"], ["No such option", "--bogus"]),
    (["train", "--algo", "a3c"], ["--algo", "a3c", "dqn", "ppo"]),
    (["train", "--batch-size", "0"], ["--batch-size"]),
    (["sweep", "spec.toml", "--retries", "-1"], ["--retries"]),
    (["sweep"], ["Missing argument"]),
    (["networks", "show", "cologne1"], ["Missing option", "--png"]),
    (["networks", "generate", "--rows", "0"], ["--rows"]),
    (["nosuch"], ["No such command", "nosuch"]),
    ([], ["Missing command"]),
])
def test_usage_errors_are_one_line(args: list[str], words: list[str]) -> None:
    result = invoke(*args)
    assert_bad_input(result, *words)
    assert result.stderr.startswith("error: ") and "Usage:" not in result.output


def test_choices_are_listed_in_help() -> None:
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for choices in ("dqn|ppo", "queue|queue-exit|pressure", "none|last|zero-flag",
                    "full|mini|stochastic"):
        assert choices in result.stdout, choices


def test_every_command_has_help() -> None:
    for path, _ in command_callbacks():
        result = invoke(*path.split(), "--help")
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.stdout


# ----------------------------------------------------------------- thin commands
def command_callbacks(typer_app=app, prefix: str = ""):
    """(command path, function) of every command registered under ``typer_app``."""
    for info in typer_app.registered_commands:
        yield prefix + (info.name or info.callback.__name__.replace("_", "-")), info.callback
    for group in typer_app.registered_groups:
        yield from command_callbacks(group.typer_instance, prefix + group.name + " ")


def body_lines(func) -> int:
    """Non-blank lines of a function's body, its docstring left out."""
    source = textwrap.dedent(inspect.getsource(func))
    node = ast.parse(source).body[0]
    assert isinstance(node, ast.FunctionDef)
    body = node.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    lines = source.splitlines()[body[0].lineno - 1:node.end_lineno]
    return sum(1 for line in lines if line.strip())


def test_commands_are_thin() -> None:
    found = dict(command_callbacks())
    assert {"compare", "train", "run", "sweep", "networks show"} <= set(found)
    for path, func in found.items():
        assert body_lines(func) <= 30, f"{path}: {body_lines(func)} lines of body"


def test_cli_modules_stay_small() -> None:
    package = Path(cli_package.__file__).parent
    for module in package.glob("*.py"):
        assert len(module.read_text().splitlines()) <= 500, module.name


def test_the_command_line_loads_without_torch() -> None:
    # torch takes about a second to import: `greenphase --help` and the commands that
    # train nothing should not wait for it
    code = "import sys, experiments.cli; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_the_console_script_gives_one_line_too() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from experiments.cli import main; main()", "compare",
         "--seeds", "0"], capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: Invalid value for '--seeds' / '-s': Input should be greater than or equal to 1"]
