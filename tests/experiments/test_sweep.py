"""Sweeps on a process pool: the store, resume after SIGKILL, crashes retried, CLI, benches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from experiments import store
from experiments.cli import app
from experiments.spec import load
from experiments.sweep import SweepError, memory, scaling, sweep
from networks import Scenario
from simulator.metrics import KPI_NAMES, delay_over_time

runner = CliRunner()

# controllers that crash in controlled ways, importable by the workers and the simulation
# processes (the test puts their folder on PYTHONPATH); each crashes once per marker file
SUPPORT = '''
import multiprocessing
import os
import signal
from pathlib import Path

from agents.classic import MaxPressure


def first_time(tag):
    marker = Path(os.environ["GREENPHASE_TEST_MARKERS"]) / tag
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


class KillsItsSimulation(MaxPressure):
    """Max-pressure that SIGKILLs its own simulation process mid-episode, once per seed."""

    name = "kills-its-simulation"

    def reset(self, views, seed):
        super().reset(views, seed)
        self.seed, self.steps = seed, 0

    def act(self, views, readings, dt):
        self.steps += 1
        if self.steps == 20 and first_time(f"simulation-{self.seed}"):
            os.kill(os.getpid(), signal.SIGKILL)  # the controller runs in the simulation
        return super().act(views, readings, dt)


class KillsItsWorker(MaxPressure):
    """Max-pressure that SIGKILLs the sweep's worker process it is built in, once."""

    name = "kills-its-worker"

    def __init__(self):
        super().__init__()
        if multiprocessing.parent_process() is not None and first_time("worker"):
            os.kill(os.getpid(), signal.SIGKILL)


class AlwaysFails(MaxPressure):
    """A controller with a bug."""

    name = "always-fails"

    def act(self, views, readings, dt):
        raise RuntimeError("this controller always fails")
'''


def write_spec(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(f'name = "{name}"\n' + body)
    return path


@pytest.fixture()
def support(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The crashing controllers as module ``sweep_support``, for this process and its children."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "sweep_support.py").write_text(SUPPORT)
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(code), os.environ.get("PYTHONPATH", "")) if p))
    monkeypatch.setenv("GREENPHASE_TEST_MARKERS", str(markers))
    return markers


def kpis_by_hash(frame: pd.DataFrame) -> dict[str, tuple[float, ...]]:
    return {row["hash"]: tuple(row[k] for k in KPI_NAMES) for row in frame.to_dict("records")}


EIGHT_RUNS = """
controllers = ["fixed", "max-pressure"]
seeds = 2
end = 600
[sweep.grid]
network = ["grid-1x1", "grid-2x2"]
"""


@pytest.fixture(scope="module")
def reference(grid1x1: Scenario, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[Path, pd.DataFrame]:
    """The eight-run sweep, uninterrupted, on two workers."""
    folder = tmp_path_factory.mktemp("reference")
    spec = write_spec(folder, "eight", EIGHT_RUNS)
    result = sweep(load(spec), folder / "out", workers=2)
    assert result.finished == 8 and not result.failures
    return spec, store.read(folder / "out")


def test_the_store_holds_one_row_per_run_and_the_results_layout(
    reference: tuple[Path, pd.DataFrame],
) -> None:
    spec, rows = reference
    out = spec.parent / "out"
    plan = load(spec)
    assert len(rows) == 8 and set(rows["status"]) == {"ok"}
    assert sorted(rows["hash"]) == sorted(u.hash for u in plan.units)
    assert set(rows["network"]) == {"grid-1x1", "grid-2x2"}
    assert (rows["attempt"] == 1).all() and (rows["error"] == "").all()
    assert rows["worker_pid"].nunique() == 2 and (rows["wall_s"] > 0).all()
    first = rows.iloc[0]
    assert json.loads(first["spec"])["controller"] == first["controller"]
    assert json.loads(first["delay_over_time"])["bins"]
    assert (out / first["trips"]).is_file()
    for name in ("spec.toml", "manifest.json", "metrics.parquet", "summary.json", "report.md",
                 "plots/delay.png", "plots/delay_vs_fixed.png", "plots/delay_over_time.png",
                 "log.txt"):
        assert (out / name).is_file(), name
    assert load(out / "spec.toml").units == plan.units  # the resolved spec reads back
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"] == 8 and summary["finished"] == 8 and summary["failed"] == 0
    assert {(r["network"], r["controller"]) for r in summary["summary"]} == {
        (n, c) for n in ("grid-1x1", "grid-2x2") for c in ("fixed", "max-pressure")}


def test_resume_skips_finished_runs_and_a_used_folder_needs_a_choice(
    reference: tuple[Path, pd.DataFrame],
) -> None:
    spec, rows = reference
    out = spec.parent / "out"
    with pytest.raises(SweepError, match="--resume"):
        sweep(load(spec), out, workers=2)
    again = sweep(load(spec), out, workers=2, resume=True, report=False)
    assert again.skipped == 8 and again.finished == 8 and again.failed_attempts == 0
    assert kpis_by_hash(store.read(out)) == kpis_by_hash(rows)


def test_sigkill_halfway_then_resume_gives_each_run_once_with_the_same_metrics(
    reference: tuple[Path, pd.DataFrame], tmp_path: Path,
) -> None:
    spec, rows = reference
    out = tmp_path / "killed"
    greenphase = Path(sys.executable).parent / "greenphase"
    proc = subprocess.Popen([str(greenphase), "sweep", str(spec), "--workers", "2", "--out",
                             str(out)], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while len(list((out / "store" / "runs").glob("*.parquet"))) < 2:
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep, its workers and their simulations
        proc.wait()
    before = store.read(out)
    assert 2 <= len(before) < 8, "the sweep was not killed halfway"

    result = runner.invoke(app, ["sweep", str(spec), "--workers", "2", "--out", str(out),
                                 "--resume", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["skipped"] == len(before) and doc["finished"] == 8
    after = store.read(out)
    assert len(after) == 8 and after["hash"].is_unique  # each run exactly once
    assert kpis_by_hash(after) == kpis_by_hash(rows)  # as if never interrupted


def test_a_simulation_killed_mid_episode_is_recorded_failed_and_retried(
    grid1x1: Scenario, support: Path, tmp_path: Path,
) -> None:
    spec = write_spec(tmp_path, "crash", """
network = "grid-1x1"
end = 300
controllers = ["sweep_support:KillsItsSimulation"]
seeds = 2
""")
    seen: list[tuple[str, bool]] = []
    result = sweep(load(spec), tmp_path / "out", workers=2,
                   on_result=lambda unit, row, retry: seen.append((row["status"], retry)))
    assert result.finished == 4 and not result.failures and result.failed_attempts == 2
    assert sorted(seen) == [("failed", True)] * 2 + [("ok", False)] * 4
    rows = store.read(tmp_path / "out")
    failed = rows[rows["status"] == "failed"]
    assert len(failed) == 2 and set(failed["seed"]) == {0, 1}
    assert (failed["controller"] == "sweep_support:KillsItsSimulation").all()
    assert failed["error"].str.contains("the simulation process died").all()
    assert (failed["attempt"] == 1).all()
    ok = rows[rows["status"] == "ok"].set_index("hash")
    assert (ok.loc[failed["hash"], "attempt"] == 2).all()
    assert len(ok) == 4 and ok.index.is_unique
    assert sorted(p.name for p in support.iterdir()) == ["simulation-0", "simulation-1"]


def test_a_killed_worker_is_recorded_and_its_runs_retried_on_a_new_pool(
    grid1x1: Scenario, support: Path, tmp_path: Path,
) -> None:
    spec = write_spec(tmp_path, "worker", """
network = "grid-1x1"
end = 300
controllers = ["fixed", "sweep_support:KillsItsWorker"]
seeds = 2
""")
    result = sweep(load(spec), tmp_path / "out", workers=2, report=False)
    assert result.finished == 4 and not result.failures and result.failed_attempts >= 1
    rows = store.read(tmp_path / "out")
    failed = rows[rows["status"] == "failed"]
    assert failed["error"].str.startswith("WorkerDied").all()
    assert "sweep_support:KillsItsWorker" in set(failed["controller"])
    assert rows[rows["status"] == "ok"]["hash"].is_unique


def test_cli_sweep_reports_a_broken_controller_and_a_missed_gate_and_exits_1(
    grid1x1: Scenario, support: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    summary_file = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary_file))
    spec = write_spec(tmp_path, "gated", """
network = "grid-1x1"
end = 300
controllers = ["fixed", "max-pressure", "sweep_support:AlwaysFails"]
seeds = 2
""")
    result = runner.invoke(app, ["sweep", str(spec), "--out", str(tmp_path / "out"),
                                 "--workers", "2", "--retries", "1", "--json",
                                 "--fail-under", "max-pressure:delay_vs_fixed_pct<=-99",
                                 "--fail-under", "mean_delay_s<1000"])
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert doc["finished"] == 4 and doc["failed"] == 2
    assert {f["controller"] for f in doc["failures"]} == {"sweep_support:AlwaysFails"}
    # a controller that raises would raise again: not retried, whatever --retries says
    assert all(f["attempts"] == 1 and "always fails" in f["error"] for f in doc["failures"])
    missed = {(g["gate"], g["controller"]) for g in doc["gates"] if not g["passed"]}
    assert missed == {("max-pressure:delay_vs_fixed_pct<=-99", "max-pressure"),
                      ("mean_delay_s<1000", "sweep_support:AlwaysFails")}
    lines = result.stderr.strip().splitlines()
    assert any(line.startswith("gate FAILED: max-pressure on grid-1x1") for line in lines)
    assert any("2 run(s) failed (after at most 1 attempt(s)" in line for line in lines)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Failed runs" in report and "## Gates" in report
    step = summary_file.read_text()
    assert "### greenphase sweep gated" in step and "**FAIL**" in step


def test_cli_run_refuses_a_sweep_and_bad_options_are_one_line(
    grid1x1: Scenario, tmp_path: Path,
) -> None:
    spec = write_spec(tmp_path, "axes", 'end = 300\ncontrollers = ["fixed"]\n'
                      '[sweep.grid]\nnetwork = ["grid-1x1"]\n')
    for args, words in (
        (["run", str(spec)], ["[sweep]", "greenphase sweep"]),
        (["sweep", str(spec), "--backend", "slurm"], ["--backend", "slurm"]),
        (["sweep", str(spec), "--address", "1.2.3.4:6379"], ["--address needs --backend ray"]),
        (["sweep", str(spec), "--fail-under", "delay<=1"], ["unknown metric", "delay"]),
        (["sweep", str(spec), "--fail-under", "sotl:mean_delay_s<=9"], ["no controller", "sotl"]),
        (["sweep", str(spec), "--fail-under", "fast"], ["METRIC OP NUMBER"]),
        (["sweep", str(spec), "--workers", "0"], ["--workers"]),
        (["sweep", str(tmp_path / "missing.toml")], ["missing.toml", "cannot read"]),
    ):
        result = runner.invoke(app, [*args, "--out", str(tmp_path / "never")])
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.output, result.output
        for word in words:
            assert word in lines[0], (args, lines[0])
    assert not (tmp_path / "never" / "store" / "runs").exists() or not any(
        (tmp_path / "never" / "store" / "runs").iterdir())


@pytest.mark.slow
def test_a_learned_controller_is_trained_evaluated_and_its_curve_stored(
    grid1x1: Scenario, tmp_path: Path,
) -> None:
    spec = write_spec(tmp_path, "learned", """
network = "grid-1x1"
end = 300
controllers = ["fixed", "dqn"]
seeds = 1
[training]
episodes = 2
eval_every = 1
hidden = [8]
[training.dqn]
learning_starts = 20
target_every = 10
buffer_size = 500
[training.optim]
batch_size = 16
""")
    result = sweep(load(spec), tmp_path / "out", workers=2)
    assert result.finished == 2 and not result.failures
    rows = store.read(tmp_path / "out").set_index("controller")
    curves = pd.read_parquet(tmp_path / "out" / rows.loc["dqn", "curves"])
    assert list(curves["episode"]) == [0, 1] and curves["eval_delay_s"].notna().all()
    assert rows.loc["fixed", "curves"] == ""
    unit_hash = rows.loc["dqn", "hash"]
    assert (tmp_path / "out" / "training" / unit_hash / "checkpoints" / "best.pt").is_file()
    assert (tmp_path / "out" / "plots" / "learning_curves.png").is_file()


def test_delay_over_time_bins_trips_by_scheduled_departure() -> None:
    trips = pd.DataFrame({
        "depart_s": [10.0, 70.0, 130.0, -1.0],
        "depart_delay_s": [0.0, 10.0, 0.0, 100.0],
        "inserted": [True, True, True, False],
        "delay_s": [4.0, 20.0, 6.0, 100.0],
    })
    doc = delay_over_time(trips, begin=0, end=300, bins=5)
    assert doc["bin_s"] == 60.0
    # scheduled: 10, 60, 130, 200 (never inserted: the end less its depart delay)
    assert doc["bins"] == [[0.0, 4.0, 1], [60.0, 20.0, 1], [120.0, 6.0, 1], [180.0, 100.0, 1]]


def test_the_sweep_benches_time_the_pool_and_watch_memory(grid1x1: Scenario,
                                                           tmp_path: Path) -> None:
    timed = scaling(tmp_path / "scaling", network="grid-1x1", runs=2, workers=(1,),
                    horizon_s=120, burn_loops=0)
    assert timed["runs"] == 2 and len(timed["load_avg_1m"]) == 2
    (row,) = timed["rows"]
    assert row["workers"] == 1 and row["wall_s"] > 0 and row["ratio_to_1"] == 1.0
    assert len(store.read(tmp_path / "scaling" / "workers-1")) == 2
    watched = memory(tmp_path / "memory", network="grid-1x1", runs=4, workers=2,
                     horizon_s=120, marks=(2, 4))
    assert [r["runs"] for r in watched["rows"]] == [2, 4] and watched["failed_attempts"] == 0
    for r in watched["rows"]:
        assert 0 < r["parent_rss_mb"] <= r["parent_peak_rss_mb"] + 1e-6
        assert r["worker_peak_rss_mb"] > 0
