"""``greenphase monitor``: the same run as compare, window KPIs, PSI, detectors, outputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from experiments import driftstats, monitor
from experiments.cli import app
from experiments.runner import run_episode
from networks import Scenario
from simulator.options import SimulationOptions
from tests.conftest import assert_bad_input

runner = CliRunner()


def net_args(sc: Scenario) -> list[str]:
    return ["--net", str(sc.net_file), "--routes", str(sc.route_files[0]), "--end", "300"]


@pytest.mark.parametrize("controller", ["max-pressure", "fixed"])
def test_a_monitored_run_is_the_run_compare_makes(grid2x2_short: Scenario,
                                                  controller: str) -> None:
    options = SimulationOptions(demand="resample")
    watched = monitor.observe(grid2x2_short, controller, 3, options)
    plain = run_episode(grid2x2_short, controller, 3, options)
    assert watched.kpis == plain.kpis
    pd.testing.assert_frame_equal(watched.trips, plain.trips)
    assert watched.samples.shape == (len(watched.times), len(watched.names))
    assert len(watched.queue) == len(watched.times)


def test_window_kpis_by_hand() -> None:
    trips = pd.DataFrame({
        "arrival_s": [1010.0, 1050.0, 1070.0, 1200.0, -1.0],
        "delay_s": [10.0, 20.0, 30.0, 99.0, 500.0],
        "arrived": [True, True, True, True, False],
    })
    times = np.arange(0.0, 181.0, 30.0)  # 0, 30, ..., 180 s after the begin at 1000 s
    queue = np.array([100.0, 1.0, 3.0, 5.0, 7.0, 9.0, 11.0])
    episode = monitor.Episode(trips, {}, times, queue, np.zeros((7, 1)), ["d:queue"], 1000.0)
    frame = monitor.window_kpis(episode, horizon_s=180.0, window_s=60.0)
    assert frame["start_s"].tolist() == [0.0, 60.0, 120.0]
    assert frame["end_s"].tolist() == [60.0, 120.0, 180.0]
    # arrivals at 10 and 50 s in the first window, 70 s in the second, 200 s (past the end)
    # in the last; the vehicle still running is in none
    assert frame["arrived"].tolist() == [2, 1, 1]
    assert frame["delay_s"].tolist() == [15.0, 30.0, 99.0]
    assert frame["throughput_veh_h"].tolist() == [120.0, 60.0, 60.0]
    # readings at (0, 60], 0 included, then (60, 120], (120, 180]
    assert frame["queue_veh"].tolist() == [np.mean([100.0, 1.0, 3.0]), 6.0, 10.0]


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    names = ["a:queue", "b:count"]
    reference_samples = np.column_stack([rng.normal(0, 1, 4000), rng.poisson(3, 4000)])
    groups = np.repeat(np.arange(4), 1000)
    kpis = {"delay": np.ones((2, 2)), "queue": np.ones((2, 2)), "throughput": np.ones((2, 2))}
    reference = driftstats.summarise(names, reference_samples, groups, kpis, {})
    same = reference.window_psi(names, reference_samples)
    assert np.allclose(same, 0.0, atol=1e-9)
    fresh = np.column_stack([rng.normal(0, 1, 2000), rng.poisson(3, 2000)])
    assert (reference.window_psi(names, fresh) < 0.05).all()
    shifted = np.column_stack([rng.normal(1.5, 1, 2000), rng.poisson(6, 2000)])
    assert (reference.window_psi(names, shifted) > 1.0).all()
    assert driftstats.psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0
    back = driftstats.Reference.from_json(json.loads(json.dumps(reference.to_json())))
    assert np.allclose(back.window_psi(names, shifted), reference.window_psi(names, shifted))


def test_detectors_alarm_on_a_shift_and_stay_silent_on_a_stationary_series() -> None:
    rng = np.random.default_rng(1)
    thresholds = dict.fromkeys(driftstats.DETECTED, 6.0)
    quiet = {name: rng.normal(0, 1, 200).tolist() for name in driftstats.DETECTED}
    assert driftstats.alarms_of(quiet, thresholds) == {name: [] for name in driftstats.DETECTED}
    shifted = {name: [*rng.normal(0, 1, 50), *rng.normal(5, 1, 50)]
               for name in driftstats.DETECTED}
    for name, windows in driftstats.alarms_of(shifted, thresholds).items():
        assert windows and 50 <= windows[0] <= 53, (name, windows)


def invoke(*args: str):
    return runner.invoke(app, ["monitor", *args])


def test_outputs_and_the_json_document(grid1x1: Scenario, tmp_path: Path) -> None:
    out = tmp_path / "mon"
    args = ["--net", str(grid1x1.net_file), "--routes", str(grid1x1.route_files[0]),
            "--end", "600", "--hours", "0.5", "--window-min", "2", "--seeds", "2",
            "--drift", "growth=+50%@10m", "--out", str(out), "--json"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["command"] == "monitor" and doc["seeds"] == [0, 1] and doc["window_s"] == 120
    assert doc["change_points"] == [{"at_s": 600.0, "change": "growth +50%"}]
    assert doc["reference"].startswith("built by monitor on tuning seeds")
    assert [s["seed"] for s in doc["summary"]["per_seed"]] == [0, 1]
    assert doc == json.loads((out / "monitor.json").read_text())
    windows = pd.read_parquet(out / "monitor.parquet")
    assert len(windows) == 2 * 15 and set(windows["seed"]) == {0, 1}
    for column in ("start_s", "end_s", "delay_s", "queue_veh", "throughput_veh_h",
                   "drift_score", *(f"alarm_{n}" for n in driftstats.DETECTED)):
        assert column in windows.columns
    alarms = pd.read_csv(out / "alarms.csv")
    assert list(alarms.columns) == ["seed", "time_s", "detector", "statistic", "value"]
    assert len(alarms) == doc["summary"]["alarms"]
    assert (out / "monitor.png").stat().st_size > 10_000
    reference = json.loads((out / "reference.json").read_text())
    assert reference["source"]["seeds"] == list(monitor.REFERENCE_SEEDS)
    # nothing is replaced without --overwrite
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = invoke(*args)
    assert_bad_input(again, "already holds the runs of `greenphase monitor`", "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize(("extra", "words"), [
    (["-c", "no-such"], ("unknown controller", "no-such")),
    (["--window-min", "0"], ("--window-min",)),
    (["--window-min", "7"], ("--window-min", "divide")),
    (["--drift", "growth=+30%@9h", "--hours", "1"], ("9h",)),
    (["--drift", "nonsense=1@1h"], ("nonsense",)),
])
def test_bad_input_is_one_line(grid2x2_short: Scenario, tmp_path: Path, extra: list[str],
                               words: tuple[str, ...]) -> None:
    out = tmp_path / "mon"
    result = invoke(*net_args(grid2x2_short), "--out", str(out), *extra)
    assert_bad_input(result, *words)
    assert not out.exists()


def test_a_trained_runs_reference_is_used_and_another_network_refused(
        grid1x1: Scenario, grid2x2_short: Scenario, tmp_path: Path) -> None:
    from experiments.train import TrainSpec, train

    run = train(TrainSpec(episodes=1, hidden=(8,)), grid2x2_short, tmp_path / "run").run
    reference = json.loads((run / "reference.json").read_text())
    assert reference["source"]["controller"] == f"trained:{run}"
    assert reference["source"]["seeds"][0] == TrainSpec().eval_seed
    assert reference["features"]
    # a learned policy decides in this process as it does in compare's child process
    options = SimulationOptions(demand="resample")
    assert (monitor.observe(grid2x2_short, f"trained:{run}", 1, options).kpis
            == run_episode(grid2x2_short, f"trained:{run}", 1, options).kpis)
    result = invoke("--net", str(grid1x1.net_file), "--routes", str(grid1x1.route_files[0]),
                    "--end", "300", "-c", f"trained:{run}", "--out", str(tmp_path / "m"))
    assert_bad_input(result, "was trained on network", "4 signals")
    # on its own network the run's reference is the one compared with
    result = invoke(*net_args(grid2x2_short), "-c", f"trained:{run}", "--hours", "0.25",
                    "--out", str(tmp_path / "own"), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["reference"] == str(run / "reference.json")


def test_another_commands_folder_is_refused(grid2x2_short: Scenario, tmp_path: Path) -> None:
    out = tmp_path / "compare"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"kind": "compare", "runs": []}))
    result = invoke(*net_args(grid2x2_short), "--out", str(out), "--overwrite")
    assert_bad_input(result, "holds the runs of `greenphase compare`")


def test_an_interrupt_is_one_line_and_status_130(grid1x1: Scenario, tmp_path: Path) -> None:
    out = tmp_path / "mon"
    greenphase = Path(sys.executable).with_name("greenphase")
    proc = subprocess.Popen(
        [str(greenphase), "monitor", "--net", str(grid1x1.net_file), "--routes",
         str(grid1x1.route_files[0]), "--end", "600", "--hours", "6", "--out", str(out)],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(4)  # the reference and the first seed are running
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted: "), err
    assert not (out / "monitor.json").exists()


def test_false_alarms_and_the_first_alarm_after_a_change() -> None:
    def seed(number: int, times: list[float]) -> monitor.SeedResult:
        alarms = [{"seed": number, "time_s": t, "detector": "queue"} for t in times]
        return monitor.SeedResult(number, pd.DataFrame(), alarms, {})

    seeds = [seed(0, [300.0, 600.0, 1500.0, 2100.0]), seed(1, [1800.0])]
    verdict = driftstats.judge(seeds, [(600.0, "growth +30%")], horizon_s=3600.0)
    # an alarm at or before the change is false; seed 1 alarms 20 minutes after it
    assert verdict.false_alarms == 2 and verdict.hours == 2.0
    assert [s["false_alarms"] for s in verdict.per_seed] == [2, 0]
    assert [s["changes"][0]["delay_s"] for s in verdict.per_seed] == [900.0, 1200.0]
    assert verdict.detected_within == {"growth +30%": False}
    assert driftstats.judge(seeds[:1], [(600.0, "growth +30%")], 3600.0).detected_within == {
        "growth +30%": True}
    assert driftstats.judge(seeds, [], 3600.0).false_alarms == 5
