"""A seed's result is its own: it does not depend on what ran before in the process."""

from __future__ import annotations

import atexit
import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import networks
from experiments.runner import run_episode
from simulator import SumoError, TrafficSimulation, isolation


def test_results_do_not_depend_on_earlier_runs() -> None:
    # in one process libsumo's later simulations could drift from a fresh one;
    # on cologne1 max-pressure with seed 1 gave two different delays that way
    scenario = dataclasses.replace(networks.get("cologne1"), end=25200 + 900)
    alone = run_episode(scenario, "max-pressure", 1).kpis
    for controller, seed in (("max-pressure", 0), ("random", 0), ("sotl", 3)):
        run_episode(scenario, controller, seed)
    after = run_episode(scenario, "max-pressure", 1).kpis
    assert after == alone


def test_the_same_episode_twice_in_one_environment_is_identical() -> None:
    scenario = dataclasses.replace(networks.get("cologne1"), end=25200 + 600)
    sim = TrafficSimulation(scenario, program="actuated")
    try:
        results = []
        for _ in range(2):
            sim.start(5)
            while not sim.done:
                sim.step(None)
            results.append(sim.finish().kpis)
        assert results[0] == results[1]
    finally:
        sim.close()


def test_an_error_in_the_child_is_raised_in_the_caller(tmp_path) -> None:
    scenario = networks.get("cologne1")
    broken = tmp_path / "broken.rou.xml"
    broken.write_text('<routes><vehicle id="v" depart="x"/></routes>')
    sim = TrafficSimulation(dataclasses.replace(scenario, route_files=(broken,)))
    try:
        with pytest.raises(SumoError, match="Invalid departure time"):
            sim.start(0)
    finally:
        sim.close()


def _fresh_server(monkeypatch: pytest.MonkeyPatch, allocator: str) -> int:
    """Restart the simulation server under ``allocator``; return its process id."""
    monkeypatch.setenv(isolation.ALLOCATOR_VARIABLE, allocator)
    if isolation._SERVER is not None:
        isolation._SERVER.stop()
    isolation.start_server()
    assert isolation._SERVER is not None
    return isolation._SERVER.process.pid


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.skipif(isolation._find_tcmalloc() is None, reason="tcmalloc is not installed")
def test_the_allocator_changes_speed_not_results(monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = dataclasses.replace(networks.get("cologne3"), end=25200 + 900)
    results = {}
    try:
        for allocator in ("system", "tcmalloc"):
            pid = _fresh_server(monkeypatch, allocator)
            assert ("tcmalloc" in _maps(pid)) == (allocator == "tcmalloc")
            results[allocator] = run_episode(scenario, "max-pressure", 2)
    finally:
        monkeypatch.undo()
        isolation._SERVER.stop()  # the next test starts one with the usual settings
    assert results["system"].kpis == results["tcmalloc"].kpis
    pd.testing.assert_frame_equal(results["system"].trips, results["tcmalloc"].trips)


def test_an_unknown_allocator_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(isolation.ALLOCATOR_VARIABLE, "hoard")
    with pytest.raises(SumoError, match="GREENPHASE_ALLOCATOR.*'hoard'"):
        isolation.allocator_library()


def test_the_server_preloads_the_registered_modules_the_caller_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(isolation, "_PRELOAD", [])
    isolation.preload("colorsys", "greenphase_never_imported", "colorsys")
    import colorsys  # noqa: F401 - the caller's own import is what makes it preloaded

    try:
        _fresh_server(monkeypatch, "system")
        assert isolation._SERVER is not None
        args = isolation._SERVER.process.args
        assert isinstance(args, list) and args[-1:] == ["colorsys"]
    finally:
        monkeypatch.undo()
        isolation._SERVER.stop()  # the next test starts one with the usual settings


@pytest.mark.parametrize("program", ["static", None])
def test_an_isolated_episode_mirrors_the_in_process_one_step_by_step(program) -> None:
    # under a program the child runs ahead and sends its states in batches; under
    # external control it answers each step: either way the parent must see exactly
    # what a simulation it drives itself sees (TraCI's: a fresh SUMO every time)
    end = 25200 + 5 * (isolation.STREAM_BATCH + 7)
    scenario = dataclasses.replace(networks.get("cologne3"), end=end)
    seen = {}
    for isolate in (True, False):
        backend = "libsumo" if isolate else "traci"
        sim = TrafficSimulation(scenario, program=program, backend=backend, isolate=isolate)
        try:
            steps = [sim.start(4)]
            greens = []
            rng = np.random.default_rng(0)
            while not sim.done:
                phases = None
                if program is None:
                    phases = [rng.integers(v.layout.num_phases) for v in sim.views]
                steps.append(sim.step(phases))
                greens.append([(v.green, v.time_in_phase) for v in sim.views])
            seen[isolate] = (steps, greens, list(sim.queue_history), sim.finish().kpis)
        finally:
            sim.close()
    (iso_steps, iso_greens, iso_queue, iso_kpis) = seen[True]
    (own_steps, own_greens, own_queue, own_kpis) = seen[False]
    assert len(iso_steps) == len(own_steps) == isolation.STREAM_BATCH + 8
    for a, b in zip(iso_steps, own_steps, strict=True):
        assert a.time == b.time
        for field in ("queue", "occupancy", "speed", "count", "first_wait"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert iso_greens == own_greens
    assert iso_queue == own_queue
    assert iso_kpis == own_kpis


def test_a_forked_copy_of_the_caller_leaves_the_original_server_alone() -> None:
    scenario = dataclasses.replace(networks.get("cologne1"), end=25200 + 300)
    before = run_episode(scenario, "fixed", 0).kpis
    pid = os.fork()
    if pid == 0:  # the copy: its own episode, then a normal exit with its exit handlers
        code = 1
        try:
            code = 0 if run_episode(scenario, "fixed", 0).kpis == before else 3
            atexit._run_exitfuncs()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert run_episode(scenario, "fixed", 0).kpis == before  # the original's server still serves
