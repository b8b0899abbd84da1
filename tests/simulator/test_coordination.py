"""Coordinated timing: Webster's plans with tlsCoordinator's green-wave offsets."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

import networks
from agents import Coordinated, make_controller
from agents.named import ControllerParamsError
from networks import Scenario
from networks.errors import NetworkError
from simulator.coordination import COORDINATED_PROGRAM_ID, CoordinatedParams, coordinated_programs
from simulator.core import TrafficSimulation
from simulator.programs import SignalPlan, WebsterParams, plans_for, webster_programs


@pytest.fixture(scope="module")
def cologne3() -> Scenario:
    """Three signals along a corridor, the whole hour of demand (Webster times it by it)."""
    return networks.get("cologne3")


def _timing(plans: dict[str, SignalPlan]) -> dict[str, list[tuple[float, str]]]:
    return {t: [(p.duration, p.state) for p in plan.program.phases] for t, plan in plans.items()}


def test_own_cycles_differ_from_webster_only_by_offsets(cologne3: Scenario) -> None:
    webster = webster_programs(cologne3)
    coordinated = coordinated_programs(cologne3, CoordinatedParams(common_cycle=False))
    assert _timing(coordinated) == _timing(webster)
    assert {p.program.program_id for p in coordinated.values()} == {COORDINATED_PROGRAM_ID}
    assert {p.program.kind for p in coordinated.values()} == {"static"}
    offsets = {t: p.program.offset for t, p in coordinated.items()}
    assert all(0 <= offsets[t] < webster[t].cycle_s for t in offsets)
    assert offsets != {t: p.program.offset for t, p in webster.items()}  # a wave was laid


def test_common_cycle_is_websters_longest_with_websters_splits(cologne3: Scenario) -> None:
    cycle = max(p.cycle_s for p in webster_programs(cologne3).values())
    coordinated = coordinated_programs(cologne3)
    assert {p.cycle_s for p in coordinated.values()} == {cycle}
    same = webster_programs(cologne3, min_cycle=cycle, max_cycle=cycle)
    assert _timing(coordinated) == _timing(same)
    assert all(0 <= p.program.offset < cycle for p in coordinated.values())
    capped = coordinated_programs(cologne3, CoordinatedParams(max_cycle=cycle - 10))
    assert {p.cycle_s for p in capped.values()} == {cycle - 10}


def test_offsets_are_deterministic_and_cached(cologne3: Scenario, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENPHASE_CACHE", str(tmp_path))
    first = coordinated_programs(cologne3)
    assert list((tmp_path / "coordination").glob("cologne3-*.json"))

    def no_subprocess(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    assert coordinated_programs(cologne3) == first
    slower = CoordinatedParams(speed_factor=0.5)  # a new key: computed again
    with pytest.raises(AssertionError, match="cache"):
        coordinated_programs(cologne3, slower)


def test_plans_for_dispatches_and_refuses_webster_settings(cologne3: Scenario) -> None:
    assert plans_for("coordinated", cologne3) == coordinated_programs(cologne3)
    with pytest.raises(ValueError, match="takes CoordinatedParams"):
        plans_for("coordinated", cologne3, WebsterParams())
    with pytest.raises(ValueError, match="takes WebsterParams"):
        plans_for("webster", cologne3, CoordinatedParams())


def test_broken_demand_is_a_network_error(cologne3: Scenario, tmp_path: Path) -> None:
    broken = tmp_path / "broken.rou.xml"
    broken.write_text("<routes><vehicle id='v' depart='0'>")
    with pytest.raises(NetworkError, match="failed on broken"):
        coordinated_programs(Scenario("broken", cologne3.net_file, (broken,), 0, 600))


@pytest.mark.parametrize(("values", "key"), [
    ({"speed_factor": 0.0}, "speed_factor"),
    ({"min_cycle": 90.0, "max_cycle": 60.0}, "exceeds"),
    ({"offset": 3.0}, "offset"),
])
def test_bad_parameters_are_refused_naming_the_key(values: dict, key: str) -> None:
    with pytest.raises(ValidationError, match=key):
        CoordinatedParams(**values)


def test_named_controller_takes_its_parameters_in_one_line() -> None:
    ctrl = make_controller("coordinated[max_cycle=90,speed_factor=0.9]")
    assert isinstance(ctrl, Coordinated) and ctrl.program == "coordinated"
    assert ctrl.program_params == CoordinatedParams(max_cycle=90.0, speed_factor=0.9)
    assert make_controller("coordinated").program_params == CoordinatedParams()
    with pytest.raises(ControllerParamsError) as err:
        make_controller("coordinated[speed_factor=-1]")
    assert "\n" not in str(err.value) and "speed_factor" in str(err.value)


def test_runs_in_sumo_on_a_multi_signal_net(grid22: Scenario) -> None:
    sim = TrafficSimulation(dataclasses.replace(grid22, end=grid22.begin + 120),
                            program="coordinated", isolate=False)
    try:
        sim.start(seed=0)
        tl = sim.connection.trafficlight
        plans = plans_for("coordinated", sim.scenario)
        for _ in range(4):
            sim.step(None)
        for tls in sim.tls_ids:
            assert tl.getProgram(tls) == COORDINATED_PROGRAM_ID
            logic = {lg.programID: lg for lg in tl.getAllProgramLogics(tls)}
            assert [p.duration for p in logic[COORDINATED_PROGRAM_ID].phases] == [
                p.duration for p in plans[tls].program.phases]
    finally:
        sim.close()
