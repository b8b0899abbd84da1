"""The executors: in process, on a process pool (and Ray, in test_ray) give the same runs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from experiments.compare import compare
from experiments.executor import InProcessExecutor, Outcome, PoolExecutor, SweepError, make_executor
from experiments.spec import parse
from experiments.units import RunUnit
from networks import Scenario
from simulator.metrics import KPI_NAMES
from simulator.options import SimulationOptions

SPEC = """
name = "executors"
network = "grid-1x1"
end = 300
controllers = ["fixed", "max-pressure", "sotl"]
seeds = 2
[sensors]
faults = "noise=0.1"
"""


def outcomes(executor: object, units: list[RunUnit], folder: Path) -> dict[str, Outcome]:
    seen: dict[str, Outcome] = {}

    def record(unit: RunUnit, out: Outcome) -> bool:
        seen[unit.hash] = out
        return False

    executor.run(units, folder, record)  # type: ignore[attr-defined]
    return seen


def test_in_process_and_pool_give_the_same_runs(grid1x1: Scenario, tmp_path: Path) -> None:
    units = list(parse(SPEC, tmp_path / "executors.toml").units)
    steps: list[tuple[str, float]] = []
    here = outcomes(InProcessExecutor(on_step=lambda u, t: steps.append((u.controller, t))),
                    units, tmp_path / "here")
    pool = outcomes(PoolExecutor(2), units, tmp_path / "pool")
    assert set(here) == set(pool) == {u.hash for u in units} and len(units) == 6
    for run_hash, out in here.items():
        assert out.status == pool[run_hash].status == "ok", (out.error, pool[run_hash].error)
        assert out.kpis == pool[run_hash].kpis
        assert out.delay_over_time == pool[run_hash].delay_over_time
        pd.testing.assert_frame_equal(out.trips, pool[run_hash].trips)
    assert {o.worker_pid for o in pool.values()} != {o.worker_pid for o in here.values()}
    assert steps and steps[-1][1] == 300.0  # every decision step reported, in this process


def test_a_failed_run_is_reported_or_raised(tmp_path: Path) -> None:
    plan = parse('network = "grid-1x1"\nend = 300\ncontrollers = ["fixed"]\nseeds = [0]\n',
                 tmp_path / "x.toml")
    unit = plan.units[0]
    broken = dataclasses.replace(unit, experiment=unit.experiment.model_copy(
        update={"begin": 500, "end": 100}))  # a horizon that ends before it begins
    out = outcomes(InProcessExecutor(), [broken], tmp_path / "o")[broken.hash]
    assert out.status == "failed" and "NetworkError" in out.error and out.retry
    with pytest.raises(Exception, match="before end"):
        outcomes(InProcessExecutor(raise_errors=True), [broken], tmp_path / "o")


def test_retries_run_again_until_record_says_no(tmp_path: Path) -> None:
    plan = parse('network = "grid-1x1"\nend = 120\ncontrollers = ["fixed"]\nseeds = [0]\n',
                 tmp_path / "x.toml")
    calls: list[str] = []

    def record(unit: RunUnit, out: Outcome) -> bool:
        calls.append(out.status)
        return len(calls) < 3

    InProcessExecutor().run(plan.units, tmp_path / "o", record)
    assert calls == ["ok"] * 3


def test_make_executor_checks_its_options() -> None:
    assert isinstance(make_executor("local", 2), PoolExecutor)
    for args, words in ((("slurm",), "unknown backend"), (("local", None, "1.2.3.4"), "--address"),
                        (("local", 0), "--workers")):
        with pytest.raises(SweepError, match=words):
            make_executor(*args)


def test_compare_on_the_pool_equals_compare_in_process(grid2x2_short: Scenario,
                                                       tmp_path: Path) -> None:
    options = SimulationOptions(decision_interval=10.0)
    names = ["fixed", "max-pressure", "sotl"]
    here = compare(grid2x2_short, names, [0, 1], options, folder=tmp_path / "here")
    pool = compare(grid2x2_short, names, [0, 1], options, folder=tmp_path / "pool",
                   executor=PoolExecutor(2))
    no_wall = [c for c in here.runs.columns if c != "wall_s"]
    pd.testing.assert_frame_equal(here.runs[no_wall], pool.runs[no_wall])
    pd.testing.assert_frame_equal(here.summary, pool.summary)
    assert list(here.runs.columns) == ["controller", "seed", *KPI_NAMES, "wall_s"]
    for folder in (tmp_path / "here", tmp_path / "pool"):
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["kind"] == "compare" and len(manifest["runs"]) == 6
        assert manifest["spec"]["signals"]["decision_interval"] == 10.0
