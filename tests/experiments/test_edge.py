"""``bench --edge``: sizes, one-thread latency and delay of a trained policy, fp32 and int8."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agents.dqn import DQNConfig
from agents.optim import OptimConfig
from experiments.cli import app
from experiments.edge import decision_latency
from experiments.train import TrainSpec, train
from networks import Scenario

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(grid2x2_short: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny DQN policy for the four signals of grid2x2_short, one episode."""
    spec = TrainSpec(algo="dqn", episodes=1, hidden=(8,), optim=OptimConfig(batch_size=16),
                     dqn=DQNConfig(learning_starts=40, buffer_size=500))
    return train(spec, grid2x2_short, tmp_path_factory.mktemp("edge") / "run").run


def user_net_args(sc: Scenario) -> list[str]:
    return ["--net", str(sc.net_file), "--routes", str(sc.route_files[0]), "--end", str(sc.end)]


def test_bench_edge_reports_size_latency_and_delay(trained: Path, grid2x2_short: Scenario) -> None:
    result = runner.invoke(app, ["bench", "--edge", str(trained), *user_net_args(grid2x2_short),
                                 "--seeds", "1", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # exactly one JSON document on stdout
    assert doc["threads"] == 1 and doc["seeds"] == 1 and doc["end_s"] == grid2x2_short.end
    rows = {row["name"]: row for row in doc["rows"]}
    expected = {"torch:fp32", "torchscript:fp32", "torchscript:int8"}
    if not doc["skipped"]:
        expected |= {"onnx:fp32", "onnx:int8"}
    assert set(rows) == expected
    for name, row in rows.items():
        assert 0 < row["median_us"] <= row["p99_us"], name
        assert row["mean_delay_s"] > 0, name
        if name != "torch:fp32":
            assert Path(row["file"]).stat().st_size == row["bytes"] > 0
    # the fp32 exports make the trained network's decisions, so the same delay to the digit
    for name in expected - {"torch:fp32"}:
        if name.endswith("fp32"):
            assert rows[name]["mean_delay_s"] == rows["torch:fp32"]["mean_delay_s"], name
    int8 = rows["torchscript:int8"]
    assert int8["size_vs_fp32"] == pytest.approx(int8["bytes"] / rows["torchscript:fp32"]["bytes"])
    assert int8["delay_vs_fp32_pct"] is not None


def test_bench_edge_prints_a_table(trained: Path, grid2x2_short: Scenario) -> None:
    result = runner.invoke(app, ["bench", "--edge", str(trained), *user_net_args(grid2x2_short),
                                 "--seeds", "1"])
    assert result.exit_code == 0, result.output
    assert "torchscript:int8" in result.stdout and "median us" in result.stdout


def test_exported_policy_runs_in_compare(trained: Path, grid2x2_short: Scenario,
                                         tmp_path: Path) -> None:
    out = tmp_path / "policy.pt"
    assert runner.invoke(app, ["export", str(trained), "--out", str(out)]).exit_code == 0
    result = runner.invoke(app, ["compare", *user_net_args(grid2x2_short), "--seeds", "1",
                                 "-c", f"trained:{trained},exported:{out}", "--json",
                                 "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    delays = {r["controller"]: r["mean_delay_s"] for r in json.loads(result.stdout)["summary"]}
    assert delays[f"exported:{out}"] == delays[f"trained:{trained}"]


def test_bench_edge_of_a_run_with_no_policy(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "--edge", str(tmp_path)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no trained policy" in lines[0]


def test_decision_latency_times_every_call() -> None:
    calls = []

    def runtime(obs, agent):
        calls.append((obs.shape, agent.shape))
        return agent

    median, p99 = decision_latency(runtime, obs_size=5, signals=3, decisions=50)
    assert 0 < median <= p99
    assert calls[-1] == ((1, 5), (1,)) and len(calls) == 50 + 200
