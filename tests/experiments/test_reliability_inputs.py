"""Issue 12's findings on input: runs with no vehicle due, absurd values, unbounded work,
spec names that are paths, and the Python API's actions and seeds.

Each bad input ends before any simulation: on the command line as one line ``error: ...``
and exit status 2, in Python as a ``ValueError`` naming what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

import networks
from experiments.cli import app
from experiments.limits import TooLargeError, check_horizon, check_policy, mlp_parameters
from experiments.options import ScenarioOptions
from experiments.spec import load
from experiments.spec_checks import check_plan, check_size
from networks import NetworkError, Scenario
from networks.demand import Demand, NoVehiclesError
from networks.due import check_due, demand_span
from simulator.env import TrafficSignalEnv
from simulator.faults import FaultConfig, FaultConfigError
from simulator.metrics import kpis
from simulator.options import SimulationOptions
from simulator.parallel import TrafficSignalParallelEnv
from tests.conftest import assert_bad_input

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def own_net(sc: Scenario, routes: Path | None = None, end: int = 300) -> list[str]:
    return ["--net", str(sc.net_file), "--routes", str(routes or sc.route_files[0]),
            "--end", str(end)]


def late_routes(sc: Scenario, folder: Path, depart: float) -> Path:
    """A route file of the scenario's first trip, departing at ``depart``."""
    first = next(line for line in sc.route_files[0].read_text().splitlines()
                 if "<trip " in line or "<vehicle " in line)
    text = first.split(' depart="')[0] + f' depart="{depart}"' + \
        first.split(' depart="')[1].split('"', 1)[1]
    path = folder / "late.rou.xml"
    path.write_text(f"<routes>\n{text}\n</routes>\n")
    return path


@pytest.fixture(scope="module")
def cologne1() -> Scenario:
    return networks.get("cologne1")


def spec_file(folder: Path, text: str, name: str = "spec.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


# ---------------------------------------------------------- 2: no vehicle due is an error
def test_a_horizon_before_the_traffic_is_refused_naming_both(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke("compare", "--network", "cologne1", "--begin", "0", "--end", "600",
                    "-c", "fixed", "--seeds", "1", "--out", str(out))
    assert_bad_input(result, "no vehicle is due between 0 and 600 s on cologne1",
                     "departs from 25205 to 28799 s")
    assert not out.exists()


def test_departures_after_the_horizon_on_a_users_net(tmp_path: Path,
                                                     grid2x2_short: Scenario) -> None:
    routes = late_routes(grid2x2_short, tmp_path, 5000)
    result = invoke("compare", *own_net(grid2x2_short, routes, end=300), "-c", "fixed",
                    "--out", str(tmp_path / "out"))
    assert_bad_input(result, "no vehicle is due between 0 and 300 s", "from 5000 to 5000 s")


def test_a_net_file_given_as_routes(tmp_path: Path, grid2x2_short: Scenario) -> None:
    result = invoke("compare", *own_net(grid2x2_short, grid2x2_short.net_file), "-c", "fixed",
                    "--out", str(tmp_path / "out"))
    assert_bad_input(result, "not a route file", "root <net>")


def test_a_spec_without_traffic_in_its_horizon(tmp_path: Path) -> None:
    spec = spec_file(tmp_path, 'controllers = ["fixed"]\nseeds = 1\nbegin = 0\nend = 600\n')
    result = invoke("run", str(spec), "--out", str(tmp_path / "out"))
    assert_bad_input(result, "spec.toml", "no vehicle is due between 0 and 600 s")


def test_every_simulation_checks_its_demand(cologne1: Scenario) -> None:
    """The Python environments go through the same check, before SUMO starts."""
    early = dataclasses.replace(cologne1, begin=0, end=600)
    env = TrafficSignalEnv(early)
    try:
        with pytest.raises(NoVehiclesError, match="no vehicle is due between 0 and 600 s"):
            env.reset(seed=0)
    finally:
        env.close()
    with pytest.raises(NoVehiclesError, match="departs from 25205 to 28799 s"):
        Demand(mode="resample").route_files(early, 0)
    assert check_due(cologne1) > 0
    assert demand_span(cologne1.route_files).first == 25205


def test_vehicles_without_a_departure_time_are_left_to_sumo(tmp_path: Path,
                                                            cologne1: Scenario) -> None:
    """A triggered (or broken) departure is SUMO's to run or to name, not "no vehicle"."""
    routes = tmp_path / "odd.rou.xml"
    routes.write_text('<routes><vehicle id="v" depart="triggered" route="r"/></routes>')
    odd = dataclasses.replace(cologne1, route_files=(routes,))
    assert demand_span(odd.route_files).unscheduled == 1
    assert check_due(odd) == 0
    routes.write_text("<routes/>")
    with pytest.raises(NoVehiclesError, match=r"odd.rou.xml\) hold no vehicle, trip or flow"):
        check_due(odd)


def test_an_empty_draw_is_refused(cologne1: Scenario, tmp_path: Path) -> None:
    minute = dataclasses.replace(cologne1, end=cologne1.begin + 60)
    with pytest.raises(NoVehiclesError, match="drawn for seed 3 has no vehicle"):
        Demand(mode="resample", scale=1e-6).route_files(minute, 3)


def test_no_vehicle_measured_is_no_mean_not_zero() -> None:
    empty = pd.DataFrame({c: pd.Series(dtype=float) for c in
                          ("delay_s", "travel_time_s", "waiting_time_s")})
    empty["arrived"] = pd.Series(dtype=bool)
    empty["inserted"] = pd.Series(dtype=bool)
    figures = kpis(empty, horizon_s=600, queue=[])
    assert math.isnan(figures["mean_delay_s"]) and figures["vehicles"] == 0


# ------------------------------------------------- 2, 5, 6: absurd values, with their range
@pytest.mark.parametrize(("value", "words"), [
    ("inf", ["decision_interval", "at most 3600"]),
    ("1e300", ["decision_interval", "at most 3600"]),
    ("1e-9", ["decision_interval", "whole number of SUMO steps", "from 1 to 3600 s"]),
    ("2.5", ["decision_interval", "whole number of SUMO steps"]),
    ("nan", ["--decision-interval", "nan"]),
])
def test_absurd_decision_intervals(value: str, words: list[str], tmp_path: Path) -> None:
    result = invoke("compare", "-n", "cologne1", "--decision-interval", value, "-c", "fixed",
                    "--out", str(tmp_path / "out"))
    assert_bad_input(result, *words)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("option", "value", "words"), [
    ("--faults", "latency=1e20", ["latency", "<= 10000"]),
    ("--faults", "latency=100000000000000000000", ["latency", "<= 10000"]),
    ("--faults", "noise=nan", ["noise", "finite"]),
    ("--faults", "noise=1e300", ["noise", "<= 10"]),
    ("--faults", "seed=-1", ["seed", ">= 0"]),
    ("--demand", "resample,scale=1e9", ["scale", "at most 100"]),
    ("--demand", "scale=inf", ["scale", "finite"]),
    ("--demand", "scale=nan", ["scale", "finite"]),
    ("--end", "99999999999999", ["end", "at most 31536000 s"]),
])
def test_absurd_values_name_the_range(option: str, value: str, words: list[str],
                                      tmp_path: Path) -> None:
    result = invoke("compare", "-n", "cologne1", option, value, "-c", "fixed",
                    "--out", str(tmp_path / "out"))
    assert_bad_input(result, *words)


@pytest.mark.parametrize(("changes", "words"), [
    ({"decision_interval": math.nan}, ["decision_interval", "finite"]),
    ({"decision_interval": 1e300}, ["decision_interval", "at most 3600"]),
    ({"decision_interval": 1e-9}, ["whole number of SUMO steps"]),
    ({"min_green": math.inf}, ["min_green", "finite"]),
    ({"max_green": 1e12}, ["max_green", "at most 1e+09"]),
    ({"max_green": -1.0}, ["max_green", "greater than 0"]),
    ({"yellow": 1e6}, ["yellow", "at most 60"]),
    ({"all_red": math.nan}, ["all_red", "finite"]),
    ({"demand": "resample,scale=1000"}, ["scale", "at most 100"]),
])
def test_the_python_api_refuses_them_too(changes: dict, words: list[str]) -> None:
    with pytest.raises(ValidationError) as err:
        SimulationOptions(**changes)
    for word in words:
        assert word in str(err.value)


def test_a_finer_sumo_step_allows_a_finer_decision_interval() -> None:
    options = SimulationOptions(decision_interval=0.5, sumo_args=("--step-length", "0.5"))
    assert options.step_length == 0.5 and options.decision_interval == 0.5
    assert SimulationOptions(decision_interval=3600).decision_interval == 3600


def test_fault_and_scenario_ranges() -> None:
    with pytest.raises(FaultConfigError, match=r"latency must be an integer >= 0 and <= 10000"):
        FaultConfig(latency=10**20)
    with pytest.raises(FaultConfigError, match="stuck_steps"):
        FaultConfig.parse("stuck_steps=99999999999")
    base = networks.get("cologne1")
    for begin, end, words in ((base.begin, math.nan, "finite"), (math.inf, 1.0, "finite"),
                              (0, 10**14, "at most")):
        with pytest.raises(NetworkError, match=words):
            dataclasses.replace(base, begin=begin, end=end)  # type: ignore[arg-type]


@pytest.mark.parametrize(("table", "words"), [
    ("[signals]\ndecision_interval = 1e-9", ["signals.decision_interval", "SUMO steps"]),
    ("[signals]\nyellow = 1e9", ["signals.yellow", "at most 60"]),
    ("[demand]\nscale = 1000.0", ["demand.scale", "at most 100"]),
    ('[sensors]\nfaults = "latency=100000000000000000000"', ["sensors.faults", "latency"]),
])
def test_spec_values_are_checked_while_reading(table: str, words: list[str],
                                                tmp_path: Path) -> None:
    spec = spec_file(tmp_path, f'controllers = ["fixed"]\n{table}\n')
    assert_bad_input(invoke("run", str(spec)), "spec.toml", *words)


# ---------------------------------------------- 5: unbounded work asks for --allow-large
def test_a_horizon_over_a_day_needs_the_flag(tmp_path: Path) -> None:
    result = invoke("compare", "-n", "cologne1", "--end", str(25200 + 90_000), "-c", "fixed",
                    "--out", str(tmp_path / "out"))
    assert_bad_input(result, "25.0 simulated hours", "limit of 24 h", "CPU", "--allow-large")
    allowed = ScenarioOptions(network="cologne1", end=25200 + 90_000, allow_large=True)
    assert allowed.scenario().horizon_s == 90_000
    with pytest.raises(TooLargeError):
        check_horizon(90_000)


def test_a_huge_policy_network_needs_the_flag(tmp_path: Path) -> None:
    run = tmp_path / "run"
    started = time.perf_counter()
    result = invoke("train", "-n", "cologne1", "--hidden", "100000000,100000000",
                    "--out", str(run))
    assert_bad_input(result, "10,000,000,500,000,002 parameters", "limit of 10,000,000",
                     "PB of memory", "--allow-large")
    assert not run.exists() and time.perf_counter() - started < 10
    check_policy((64, 64), allow_large=False)
    check_policy((100_000_000,) * 2, allow_large=True)
    assert mlp_parameters(3, (4,), 2) == 3 * 4 + 4 + 4 * 2 + 2


def test_a_spec_of_fifty_thousand_runs_needs_the_flag(tmp_path: Path) -> None:
    greens = ", ".join(str(g) for g in range(1, 101))
    spec = spec_file(tmp_path, f'controllers = ["fixed"]\nseeds = 500\n'
                               f'[sweep.grid]\n"signals.min_green" = [{greens}]\n')
    started = time.perf_counter()
    result = invoke("sweep", str(spec), "--out", str(tmp_path / "out"))
    assert_bad_input(result, "spec.toml", "50,000 runs", "limit of 2,000", "simulated hours",
                     "--allow-large", "allow_large = true")
    assert time.perf_counter() - started < 10  # refused before the points are expanded
    assert not (tmp_path / "out").exists()


def test_a_spec_may_allow_large_work_itself(tmp_path: Path) -> None:
    text = 'controllers = ["fixed"]\nseeds = 1\nhorizon_s = 90000\n'
    refused = spec_file(tmp_path, text, "long.toml")
    assert_bad_input(invoke("run", str(refused)), "long.toml", "limit of 24 h",
                     "allow_large = true")
    allowed = spec_file(tmp_path, "allow_large = true\n" + text, "allowed.toml")
    check_size(allowed)
    plan = load(allowed)
    check_plan(plan, allowed)
    assert plan.allow_large and plan.to_dict()["allow_large"] is True
    with pytest.raises(TooLargeError, match="limit of 24 h"):
        check_plan(load(refused), refused)
    check_plan(load(refused), refused, allow_large=True)


def test_a_spec_with_a_huge_learned_network(tmp_path: Path) -> None:
    spec = spec_file(tmp_path, 'controllers = ["dqn"]\nseeds = 1\n[training]\n'
                               'hidden = [100000000, 100000000]\n')
    assert_bad_input(invoke("run", str(spec)), "dqn's policy network", "parameters",
                     "allow_large = true")


def test_an_empty_spec_is_an_error_naming_the_file(tmp_path: Path) -> None:
    spec = spec_file(tmp_path, "# nothing yet\n", "empty.toml")
    result = invoke("run", str(spec), "--out", str(tmp_path / "out"))
    assert_bad_input(result, "empty.toml", "the spec is empty")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------- 3: a spec name is a plain name
@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "a/b", ".hidden", "..", "a\\\\b", ""])
def test_a_spec_name_that_is_a_path_is_refused(name: str, tmp_path: Path) -> None:
    spec = spec_file(tmp_path, f'name = "{name}"\ncontrollers = ["fixed"]\nseeds = 1\n')
    result = invoke("run", str(spec))
    assert_bad_input(result, "spec.toml", "name:")
    assert not (tmp_path.parent / "x").exists()


def test_a_plain_name_passes(tmp_path: Path) -> None:
    spec = spec_file(tmp_path, 'name = "rush-hour_2"\ncontrollers = ["fixed"]\nseeds = 1\n',
                     ".dotted.toml")
    assert load(spec).name == "rush-hour_2"
    unnamed = spec_file(tmp_path, 'controllers = ["fixed"]\nseeds = 1\n', ".dotted.toml")
    assert load(unnamed).name == "dotted"


# --------------------------------------------------- 7: the Python API's actions and seeds
def test_a_fractional_action_is_refused_and_integers_pass(grid2x2_short: Scenario) -> None:
    one = dataclasses.replace(grid2x2_short, end=60)
    env = TrafficSignalEnv(one)
    try:
        env.reset(seed=0)
        with pytest.raises(ValueError, match="whole phase number"):
            env.step(np.array([0.7, 0, 0, 0]))
        with pytest.raises(ValueError, match="whole phase number"):
            env.step([0, 0, np.nan, 0])
        assert env.sim.time == one.begin  # nothing was applied
        env.step(np.array([1, 0, 1, 0], dtype=np.int32))
        env.step([np.int64(0), 1, 0, 1])
        assert env.sim.time > one.begin
    finally:
        env.close()


def test_a_fractional_action_on_a_discrete_space(grid1x1: Scenario) -> None:
    env = TrafficSignalEnv(dataclasses.replace(grid1x1, end=60))
    try:
        env.reset(seed=0)
        with pytest.raises(ValueError, match=r"whole phase number \(an integer\), got 0.7"):
            env.step(0.7)
        env.step(np.int64(1))
        env.step(1)
    finally:
        env.close()


@pytest.mark.parametrize("seed", [2**70, -1, 2**31, 1.5])
def test_a_seed_sumo_cannot_take_is_refused(seed: object, grid1x1: Scenario) -> None:
    env = TrafficSignalEnv(dataclasses.replace(grid1x1, end=60))
    parallel = TrafficSignalParallelEnv(dataclasses.replace(grid1x1, end=60))
    try:
        for each in (env, parallel):
            with pytest.raises(ValueError, match=r"seed must be an integer from 0 to 2147483647"):
                each.reset(seed=seed)  # type: ignore[arg-type]
    finally:
        env.close()
        parallel.close()


def test_the_parallel_env_refuses_fractional_actions(grid1x1: Scenario) -> None:
    env = TrafficSignalParallelEnv(dataclasses.replace(grid1x1, end=60))
    try:
        env.reset(seed=np.int64(2**31 - 1))  # type: ignore[arg-type]  # NumPy's, as drawn
        agent = env.possible_agents[0]
        with pytest.raises(ValueError, match=f"action of '{agent}' must be a whole phase"):
            env.step({agent: 0.7})
        with pytest.raises(ValueError, match="must be one phase number"):
            env.step({agent: [0, 1]})
        env.step({agent: np.int64(1)})
    finally:
        env.close()
