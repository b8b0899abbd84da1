"""``greenphase bench --train``: learning speed side by side, rows left out with one line."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import time

import pytest
from rich.console import Console
from typer.testing import CliRunner

from experiments import bench_train
from experiments.bench import BenchError
from experiments.cli import app
from experiments.train import default_simulations
from networks import Scenario

runner = CliRunner()


def test_rows_and_the_lines_for_rows_left_out(grid1x1: Scenario, grid2x2_short: Scenario,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    rows, notes = bench_train.train_rows(grid2x2_short, 2)
    if importlib.util.find_spec("stable_baselines3") is not None:
        assert rows == ["sb3-dqn:sumo-rl", "greenphase-dqn:1", "greenphase-dqn:2"]
        assert notes == ["SB3's DQN on greenphase's Gymnasium env drives one signal and "
                         "grid-2x2 has 4: that row is left out (on sumo-rl's env one DQN "
                         "decides for every signal)"]
        rows, notes = bench_train.train_rows(grid1x1, 1)
        assert rows == ["sb3-dqn:sumo-rl", "sb3-dqn:greenphase", "greenphase-dqn:1"]
        assert notes == []
    else:
        assert rows == ["greenphase-dqn:1", "greenphase-dqn:2"]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    rows, notes = bench_train.train_rows(grid1x1, 3)
    assert rows == ["greenphase-dqn:1", "greenphase-dqn:3"]
    assert len(notes) == 1 and "stable-baselines3 is not installed" in notes[0]
    assert bench_train.decision_steps(dataclasses.replace(grid1x1, end=62)) == 4 * 13


@pytest.mark.slow
def test_bench_train_times_greenphase_without_sb3(grid1x1: Scenario,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # as if not installed
    args = ["bench", "--train", "--net", str(grid1x1.net_file), "--routes",
            str(grid1x1.route_files[0]), "--end", "60", "--repeats", "1", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    expected = sorted({1, default_simulations()})
    assert [row["name"] for row in doc["rows"]] == [f"greenphase-dqn:{n}" for n in expected]
    assert doc["steps"] == 4 * 12 and doc["decision_s"] == 5
    for row in doc["rows"]:
        assert row["steps_per_s"] == pytest.approx(48 / row["wall_s"])
        assert row["ratio_to_sb3_sumo_rl"] is None
        assert row["vehicles"] > 0
        assert row["cpu_s"] > 0  # this machine's /proc/stat says it
    assert "stable-baselines3 is not installed" in result.stderr
    assert len(doc["left_out"]) == 1


@pytest.mark.slow
def test_sb3_learns_on_every_signal_of_sumo_rls_env_over_the_same_decision_steps(
        grid2x2_short: Scenario) -> None:
    pytest.importorskip("stable_baselines3")
    result = bench_train.bench_train(grid2x2_short, simulations=1)
    rows = {row["name"]: row for row in result["rows"]}
    assert list(rows) == ["sb3-dqn:sumo-rl", "greenphase-dqn:1"]
    assert result["steps"] == 4 * 60 and len(result["left_out"]) == 1
    sb3 = rows["sb3-dqn:sumo-rl"]
    assert sb3["ratio_to_sb3_sumo_rl"] == 1.0 and sb3["vehicles"] > 0
    assert rows["greenphase-dqn:1"]["ratio_to_sb3_sumo_rl"] == pytest.approx(
        sb3["wall_s"] / rows["greenphase-dqn:1"]["wall_s"])


def test_sb3s_row_is_left_out_where_the_signals_are_unlike(grid2x2_short: Scenario,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []

    def worker(row: str, scenario: Scenario) -> dict[str, float]:
        ran.append(row)
        if row == "sb3-dqn:sumo-rl":
            raise BenchError(f"row {row!r}: ValueError: {bench_train.UNLIKE_SIGNALS}")
        return {"wall_s": 2.0, "vehicles": 9.0, "cpu_s": 3.0}

    monkeypatch.setattr(bench_train, "_run_in_worker", worker)
    monkeypatch.setattr(bench_train, "train_rows",
                        lambda scenario, n: (["sb3-dqn:sumo-rl", "greenphase-dqn:1"], []))
    lines: list[str] = []
    result = bench_train.bench_train(grid2x2_short, repeats=2, simulations=1,
                                     progress=lines.append)
    assert ran == ["sb3-dqn:sumo-rl", "greenphase-dqn:1", "greenphase-dqn:1"]
    assert [row["name"] for row in result["rows"]] == ["greenphase-dqn:1"]
    assert result["rows"][0]["ratio_to_sb3_sumo_rl"] is None
    assert result["left_out"] == [lines[0]] and "its row is left out" in lines[0]

    def broken(row: str, scenario: Scenario) -> dict[str, float]:
        raise BenchError(f"row {row!r}: the worker failed (exit status 1): boom")

    monkeypatch.setattr(bench_train, "_run_in_worker", broken)
    with pytest.raises(BenchError, match="boom"):  # any other failure still fails the bench
        bench_train.bench_train(grid2x2_short, simulations=1)


def test_busy_cpu_counts_the_work_done_meanwhile() -> None:
    before = bench_train.busy_cpu_s()
    if before is None:
        pytest.skip("this machine has no /proc/stat")
    spun = time.process_time() + 0.3
    while time.process_time() < spun:  # 0.3 s of this process's own CPU time
        pass
    after = bench_train.busy_cpu_s()
    assert after is not None and after - before >= 0.25  # 10 ms ticks; others only add


def test_the_table_leaves_cpu_blank_where_the_machine_does_not_say() -> None:
    row = {"name": "greenphase-dqn:1", "wall_s": 2.0, "steps_per_s": 24.0, "vehicles": 5.0,
           "ratio_to_sb3_sumo_rl": None}
    result = {"network": "x", "steps": 48, "decision_s": 5, "repeats": 1,
              "rows": [{**row, "cpu_s": 3.0}, {**row, "name": "greenphase-dqn:2", "cpu_s": None}]}
    console = Console(width=200, record=True)
    console.print(bench_train.format_train_table(result))
    lines = [line for line in console.export_text().splitlines() if "greenphase-dqn" in line]
    cells = [[cell.strip() for cell in line.split("│")[-3:-1]] for line in lines]
    assert cells == [["3.0", "1.50"], ["", ""]]  # busy CPU s, cores busy


def test_bench_train_refuses_bad_input_in_one_line() -> None:
    result = runner.invoke(app, ["bench", "--train", "--network", "no-such-net"])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "no-such-net" in result.stderr


def test_the_trips_count_the_vehicles_a_step_by_step_count_sees(grid1x1: Scenario) -> None:
    """Vehicle-seconds from the trips equal the vehicles counted every simulated second."""
    from simulator.core import TrafficSimulation
    from simulator.options import SimulationOptions

    scenario = dataclasses.replace(grid1x1, end=grid1x1.begin + 600)
    sim = TrafficSimulation(scenario, SimulationOptions(decision_interval=1), isolate=False)
    sim.start(3)
    counts = []
    while not sim.done:
        sim.step([0])
        sumo = sim.connection
        counts.append(sumo.vehicle.getIDCount() + len(sumo.simulation.getPendingVehicles()))
    kpis = sim.finish().kpis
    assert kpis["vehicles"] > 20 and max(counts) > 10
    measured = bench_train.mean_vehicles([kpis], scenario.horizon_s)
    assert measured == pytest.approx(sum(counts) / len(counts), rel=0.05)
    assert bench_train.mean_vehicles([kpis, kpis], scenario.horizon_s) == pytest.approx(measured)
