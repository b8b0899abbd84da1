"""Alternative signal programs: actuated and Webster plans, and the additional file SUMO loads."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import networks
from networks import NetworkError, Phase, Program, Scenario
from simulator import movements, programs
from simulator.options import SimulationOptions
from simulator.programs import (
    ACTUATED_PROGRAM_ID,
    WEBSTER_PROGRAM_ID,
    SignalPlan,
    WebsterParams,
    actuated_programs,
    critical_flow_ratios,
    link_flows,
    movement_counts,
    plans_for,
    webster_program,
    webster_programs,
    write_additional,
)
from simulator.sumo import sumo_binary

TLS = "GS_cluster_357187_359543"  # cologne1's only signal


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("GREENPHASE_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def cologne1() -> Scenario:
    """cologne1's whole hour (not the short one of conftest): Webster times it by its demand."""
    return networks.get("cologne1")


@pytest.fixture(scope="module")
def webster1(cologne1: Scenario, tmp_path_factory: pytest.TempPathFactory) -> dict[str, SignalPlan]:
    """Webster plans for cologne1, routed once for the module into a private cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GREENPHASE_CACHE", str(tmp_path_factory.mktemp("webster-cache")))
        return webster_programs(cologne1)


def _program(*phases: tuple[float, str]) -> Program:
    return Program("t", "0", "static", 0.0, tuple(Phase(d, s) for d, s in phases))


# ---------------------------------------------------------------------------- actuated


def test_actuated_keeps_static_phases(cologne1: Scenario) -> None:
    net = cologne1.net
    plans = actuated_programs(net)
    assert list(plans) == net.tls_ids == [TLS]
    plan, static = plans[TLS], net.programs[TLS]
    assert plan.program.kind == "actuated"
    assert plan.program.program_id == ACTUATED_PROGRAM_ID
    assert plan.program.offset == static.offset
    assert [p.state for p in plan.program.phases] == [p.state for p in static.phases]
    for phase, own in zip(plan.program.phases, static.phases, strict=True):
        if own.is_green:
            assert phase.min_dur is not None and phase.max_dur is not None
            assert phase.min_dur <= phase.duration <= phase.max_dur
        else:  # yellow and all-red stay fixed
            assert (phase.duration, phase.min_dur, phase.max_dur) == (own.duration, None, None)
    assert plan.params == {
        "max-gap": "3",
        "detector-gap": "2",
        "passing-time": "1.9",
        "show-detectors": "false",
    }


def test_actuated_keeps_the_nets_own_bounds_and_fills_missing_ones(cologne1: Scenario) -> None:
    net = cologne1.net
    # cologne1's greens carry minDur=5 maxDur=50 of their own: those win over the defaults
    own = actuated_programs(net, min_green=7, max_green=40)[TLS].program
    assert {(p.min_dur, p.max_dur) for p in own.phases if p.is_green} == {(5.0, 50.0)}
    # without them the defaults apply, and the initial duration is clamped into range
    static = net.programs[TLS].phases
    long_greens = (Phase(60.0 if p.is_green else p.duration, p.state) for p in static)
    bare = Program(TLS, "0", "static", 0.0, tuple(long_greens))
    stripped = networks.NetInfo(net.path, {TLS: bare}, net.links, net.lanes)
    made = actuated_programs(stripped, min_green=7, max_green=40)[TLS].program
    greens = [p for p in made.phases if p.is_green]
    assert greens and all((p.min_dur, p.max_dur, p.duration) == (7, 40, 40) for p in greens)
    with pytest.raises(ValueError):
        actuated_programs(net, min_green=10, max_green=5)


# ---------------------------------------------------------------------------- Webster maths


def test_webster_program_formula() -> None:
    prog = _program((30, "GGrr"), (3, "yyrr"), (30, "rrGG"), (3, "rryy"))
    # L = 6 s of yellow: C0 = (1.5*6 + 5) / (1 - 0.4) = 23.3 -> min_cycle 30; 24 s of green 3:1
    plain = webster_program(prog, {0: 0.3, 2: 0.1}, startup_lost_time=0)
    assert [p.duration for p in plain.phases] == [18, 3, 6, 3]
    assert (plain.kind, plain.program_id) == ("static", WEBSTER_PROGRAM_ID)
    assert [p.state for p in plain.phases] == [p.state for p in prog.phases]
    # L = 6 + 2*2 = 10: C0 = 20 / 0.6 = 33; effective green 23 split 3:1, plus 2 s start-up each
    startup = webster_program(prog, {0: 0.3, 2: 0.1}, startup_lost_time=2)
    assert [p.duration for p in startup.phases] == [19, 3, 8, 3]
    # a given lost time per phase replaces yellow + start-up in L: (1.5*16 + 5) / 0.6 = 48
    given = webster_program(prog, {0: 0.3, 2: 0.1}, lost_time_per_phase=8)
    assert sum(p.duration for p in given.phases) == 48


def test_webster_program_guards() -> None:
    prog = _program((30, "GGrr"), (3, "yyrr"), (30, "rrGG"), (3, "rryy"))
    # Y >= 0.9 is capped: the cycle hits max_cycle instead of blowing up
    saturated = webster_program(prog, {0: 0.7, 2: 0.5}, max_cycle=100)
    assert sum(p.duration for p in saturated.phases) == 100
    assert saturated.phases[0].duration > saturated.phases[2].duration
    # a phase without flow gets min_green, the other one the rest of the cycle
    lopsided = webster_program(prog, {0: 0.5, 2: 0.0}, min_green=6)
    assert lopsided.phases[2].duration == 6
    assert sum(p.duration for p in lopsided.phases) >= 30
    # no flow at all: the signal keeps its own timing
    idle = webster_program(prog, {0: 0.0, 2: 0.0})
    assert [p.duration for p in idle.phases] == [30, 3, 30, 3]
    # minimum greens that do not fit stretch the cycle rather than go below min_green
    tight = webster_program(prog, {0: 0.1, 2: 0.1}, min_cycle=10, max_cycle=12, min_green=5)
    assert [p.duration for p in tight.phases] == [5, 3, 5, 3]


def test_critical_flow_ratios_split_links_over_the_phases_that_serve_them(
    cologne1: Scenario,
) -> None:
    net = cologne1.net
    program = net.programs[TLS]
    assert program.phases[0].state[6:10] == "GGgg" and program.phases[2].state[8:10] == "GG"
    flows = [0.0] * len(net.links[TLS])
    flows[6] = flows[7] = 900.0  # through movement on lanes _0 and _1 (G in phase 0)
    flows[8] = 360.0  # left turn from lane _1: g in phase 0, G in phase 2 -> half each
    ratios = critical_flow_ratios(net, TLS, tuple(flows), saturation_flow=1800)
    assert set(ratios) == {i for i, p in enumerate(program.phases) if p.is_green}
    assert ratios[0] == pytest.approx((900 + 180) / 1800)  # lane _1 is the critical one
    assert ratios[2] == pytest.approx(180 / 1800)
    assert ratios[4] == ratios[6] == 0


def test_link_flows_split_a_movement_over_its_lanes(cologne1: Scenario) -> None:
    net = cologne1.net
    counts = {("23429231#1", "32038051#0"): 100, ("23429231#1", "-28198821#4"): 30}
    flows = link_flows(net, counts, 1800)[TLS]
    # the through movement leaves from two lanes (links 6 and 7): 200 veh/h, 100 each
    assert flows[6] == pytest.approx(100) and flows[7] == pytest.approx(100)
    assert flows[8] == pytest.approx(60)  # the left turn has one link
    assert sum(flows) == pytest.approx(260)


# ---------------------------------------------------------------------------- Webster on SUMO


def test_webster_on_cologne1(cologne1: Scenario, webster1: dict[str, SignalPlan]) -> None:
    net = cologne1.net
    static = net.programs[TLS]
    plan = webster1[TLS].program
    assert (plan.kind, plan.program_id, plan.offset) == ("static", WEBSTER_PROGRAM_ID, 0.0)
    assert [p.state for p in plan.phases] == [p.state for p in static.phases]
    assert 30 <= webster1[TLS].cycle_s <= 120
    for phase, own in zip(plan.phases, static.phases, strict=True):
        if own.is_green:
            assert phase.duration >= 5
        else:
            assert phase.duration == own.duration
    flows = link_flows(net, movement_counts(cologne1), cologne1.horizon_s)
    ratios = critical_flow_ratios(net, TLS, flows[TLS])
    assert 0 < sum(ratios.values()) < 0.9
    green = {i: plan.phases[i].duration for i in ratios}
    busiest, quietest = max(ratios, key=ratios.__getitem__), min(ratios, key=ratios.__getitem__)
    assert ratios[busiest] > ratios[quietest] and green[busiest] > green[quietest]
    for i in ratios:  # more critical flow never gets less green
        for j in ratios:
            if ratios[i] > ratios[j]:
                assert green[i] >= green[j]


def test_plans_follow_the_runs_demand_scale_and_green_bounds(
    cologne1: Scenario, webster1: dict[str, SignalPlan], monkeypatch: pytest.MonkeyPatch
) -> None:
    heavier = plans_for("webster", cologne1, options=SimulationOptions(demand="fixed,scale=1.5"))
    # more traffic raises every critical flow ratio, so Webster's cycle grows
    assert heavier[TLS].cycle_s > webster1[TLS].cycle_s
    assert plans_for("webster", cologne1, options=SimulationOptions())[TLS] == webster1[TLS]
    slow = SimulationOptions(min_green=12, max_green=70)
    greens = [p for p in plans_for("webster", cologne1, options=slow)[TLS].program.phases
              if p.is_green]
    assert greens and min(p.duration for p in greens) >= 12
    # given settings win over the run's
    pinned = plans_for("webster", cologne1, WebsterParams(min_green=6), options=slow)
    assert pinned[TLS] == plans_for("webster", cologne1, WebsterParams(min_green=6))[TLS]
    # actuated greens without bounds of their own take the run's (the protocol's)
    seen: dict[str, float] = {}
    monkeypatch.setattr(programs, "actuated_programs", lambda net, **kw: seen.update(kw) or {})
    plans_for("actuated", cologne1, options=slow)
    assert (seen["min_green"], seen["max_green"]) == (12, 70)


def test_demand_is_counted_within_the_window(cologne1: Scenario) -> None:
    counts = movement_counts(cologne1)
    # duarouter routes all ~2000 RESCO trips; every one crosses the single signal once
    assert 1500 < sum(counts.values()) < 2500
    early = movement_counts(Scenario("c1", cologne1.net_file, cologne1.route_files, 25200, 25500))
    assert 0 < sum(early.values()) < sum(counts.values()) / 5


def test_routing_is_cached(
    cologne1: Scenario, _private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    short = Scenario("c1", cologne1.net_file, cologne1.route_files, 25200, 25800)
    first = movement_counts(short)
    files = list((_private_cache / "webster").glob("cologne1-*.json"))
    assert len(files) == 1
    assert json.loads(files[0].read_text())["key"]["end"] == 25800

    def no_routing(*args: object) -> None:
        raise AssertionError("duarouter ran again")

    monkeypatch.setattr(movements, "_route_and_count", no_routing)
    assert movement_counts(short) == first
    with pytest.raises(AssertionError, match="ran again"):  # another window is another key
        movement_counts(Scenario("c1", cologne1.net_file, cologne1.route_files, 25200, 25900))


def test_failed_duarouter_is_a_network_error(cologne1: Scenario, tmp_path: Path) -> None:
    broken = tmp_path / "broken.rou.xml"
    broken.write_text('<routes>\n<trip id="a" depart="0" from="x"\n')
    with pytest.raises(NetworkError, match="duarouter failed") as err:
        webster_programs(Scenario("broken", cologne1.net_file, (broken,), 0, 600))
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------- additional file


def test_write_additional_escapes_and_replaces(tmp_path: Path) -> None:
    odd = Program('a&b"<c>', "p'1", "static", 2.5, (Phase(10, "Gr"), Phase(3, "yr")))
    plans = [SignalPlan(odd, {"k&": 'v"<'}), SignalPlan(actuated_like(odd))]
    path = tmp_path / "out" / "plans.add.xml"
    write_additional(plans, path)
    write_additional(plans, path)  # overwrites in place
    assert [p.name for p in path.parent.iterdir()] == ["plans.add.xml"]
    root = ET.parse(path).getroot()
    assert root.tag == "additional"
    logics = root.findall("tlLogic")
    assert [(t.get("id"), t.get("programID")) for t in logics] == [
        ('a&b"<c>', "p'1"),
        ('a&b"<c>', "act"),
    ]
    assert logics[0].get("offset") == "2.5" and logics[0].get("type") == "static"
    assert [p.attrib for p in logics[0].findall("param")] == [{"key": "k&", "value": 'v"<'}]
    assert [p.attrib for p in logics[1].findall("phase")] == [
        {"duration": "10", "state": "Gr", "minDur": "4", "maxDur": "20"},
        {"duration": "3", "state": "yr"},
    ]
    with pytest.raises(ValueError, match="two plans"):
        write_additional([plans[0], plans[0]], path)


def actuated_like(program: Program) -> Program:
    phases = (Phase(10, "Gr", 4, 20), Phase(3, "yr"))
    return Program(program.tls_id, "act", "actuated", 0.0, phases)


def sumo_command(scenario: Scenario, additional: Path, seconds: int) -> list[str]:
    """SUMO on the scenario with an additional file, for its first ``seconds``."""
    return [
        sumo_binary("sumo"),
        "-n", str(scenario.net_file),
        "-r", ",".join(str(r) for r in scenario.route_files),
        "-a", str(additional),
        "-b", str(scenario.begin),
        "-e", str(scenario.begin + seconds),
        "--no-step-log", "true",
    ]  # fmt: skip


def test_programs_load_in_sumo(
    cologne1: Scenario, webster1: dict[str, SignalPlan], tmp_path: Path
) -> None:
    path = tmp_path / "programs.add.xml"
    write_additional([*actuated_programs(cologne1.net).values(), *webster1.values()], path)
    cmd = sumo_command(cologne1, path, 300)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "Error" not in done.stderr


_SWITCH = """
import json, sys
import libsumo
args, plans = json.loads(sys.argv[1]), json.loads(sys.argv[2])
libsumo.start(args)
out = {}
for program_id, states in plans.items():
    libsumo.trafficlight.setProgram(sys.argv[3], program_id)
    seen = set()
    for _ in range(120):
        libsumo.simulationStep()
        seen.add(libsumo.trafficlight.getRedYellowGreenState(sys.argv[3]))
    logic = [lg for lg in libsumo.trafficlight.getAllProgramLogics(sys.argv[3])
             if lg.programID == program_id][0]
    out[program_id] = {
        "active": libsumo.trafficlight.getProgram(sys.argv[3]),
        "type": logic.type,
        "durations": [p.duration for p in logic.phases],
        "states_seen": sorted(seen),
        "in_program": all(s in states for s in seen),
    }
libsumo.close()
print(json.dumps(out))
"""


def test_libsumo_switches_to_the_plans(
    cologne1: Scenario, webster1: dict[str, SignalPlan], tmp_path: Path
) -> None:
    actuated = actuated_programs(cologne1.net)
    path = tmp_path / "programs.add.xml"
    write_additional([*actuated.values(), *webster1.values()], path)
    args = [*sumo_command(cologne1, path, 600), "--no-warnings", "true"]
    plans = {
        plan[TLS].program.program_id: [p.state for p in plan[TLS].program.phases]
        for plan in (webster1, actuated)
    }
    # libsumo holds one simulation per process: run it in a child process
    done = subprocess.run(
        [sys.executable, "-c", _SWITCH, json.dumps(args), json.dumps(plans), TLS],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    web, act = result[WEBSTER_PROGRAM_ID], result[ACTUATED_PROGRAM_ID]
    assert web["active"] == WEBSTER_PROGRAM_ID and act["active"] == ACTUATED_PROGRAM_ID
    assert web["durations"] == [p.duration for p in webster1[TLS].program.phases]
    assert (web["type"], act["type"]) == (0, 3)  # libsumo's TRAFFICLIGHT_TYPE_STATIC, _ACTUATED
    assert web["in_program"] and act["in_program"]
    assert len(web["states_seen"]) >= 3  # a 120 s window crosses several phases of a <=120 s cycle
