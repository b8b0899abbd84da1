"""Demand in the simulation options: ``fixed`` runs SUMO as always, ``resample`` a draw per seed."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import gymnasium
import pytest
from pydantic import ValidationError

from networks import Demand, Scenario, resample
from simulator import SimulationOptions, TrafficSignalEnv, TrafficSimulation
from simulator.options import validation_message

RESAMPLE = Demand(mode="resample")


def test_the_default_demand_is_the_route_files_as_always(cologne1: Scenario) -> None:
    options = SimulationOptions()
    assert options.demand == Demand() and options.demand_scale == 1.0
    assert options.sumo_arguments() == ()
    sim = TrafficSimulation(cologne1, isolate=False)
    try:
        cmd = sim.sumo_command(0)
        assert cmd[cmd.index("-r") + 1] == ",".join(str(r) for r in cologne1.route_files)
        assert "--scale" not in cmd
    finally:
        sim.close()


def test_demand_scale_is_the_scale_of_the_demand() -> None:
    scaled = SimulationOptions(demand_scale=1.2)
    assert scaled.demand == Demand(scale=1.2) and scaled.demand_scale == 1.2
    assert scaled.sumo_arguments() == ("--scale", "1.2")  # fixed: SUMO scales, as before
    resampled = SimulationOptions(demand="resample,scale=1.2")
    assert resampled.demand == Demand(mode="resample", scale=1.2)
    assert resampled.sumo_arguments() == ()  # the draw is scaled, not SUMO
    assert SimulationOptions.of(resampled, demand_scale=2.0).demand == Demand(
        mode="resample", scale=2.0)
    assert SimulationOptions.model_validate(resampled.model_dump()) == resampled
    assert resampled.model_dump()["demand"] == {"mode": "resample", "scale": 1.2, "bin_s": 60}
    assert pickle.loads(pickle.dumps(resampled)) == resampled
    assert hash(resampled) == hash(SimulationOptions(demand=Demand(mode="resample", scale=1.2)))


@pytest.mark.parametrize(("changes", "words"), [
    ({"demand": "bogus"}, ("demand: ", "bogus", "fixed or resample")),
    ({"demand": "resample,scale=0"}, ("demand: ", "scale")),
    ({"demand": {"mode": "resample", "scale": -1}}, ("demand.scale", "greater than 0")),
    ({"demand_scale": 0}, ("demand.scale", "greater than 0")),
])
def test_a_bad_demand_is_one_line(changes: dict[str, Any], words: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as caught:
        SimulationOptions.of(**changes)
    message = validation_message(caught.value, "where")
    assert len(message.splitlines()) == 1 and message.startswith("where: ")
    for word in words:
        assert word in message, message


def test_envs_take_the_demand_as_a_keyword(cologne1: Scenario) -> None:
    env = gymnasium.make("greenphase/cologne1-v0", network=cologne1, demand="resample")
    try:
        unwrapped = env.unwrapped
        assert isinstance(unwrapped, TrafficSignalEnv)
        assert unwrapped.options.demand == RESAMPLE
        cmd = unwrapped.sim.sumo_command(4)
        assert cmd[cmd.index("-r") + 1] == str(resample(cologne1, 4))
    finally:
        env.close()
    assert SimulationOptions.from_keywords(None, {"demand_scale": 1.5}, "f").demand_scale == 1.5


def episode(sim: TrafficSimulation, seed: int) -> tuple[int, dict[str, float]]:
    sim.start(seed)
    while not sim.done:
        sim.step(None)
    result = sim.finish()
    return len(result.trips), result.kpis


def test_resampled_episodes_differ_by_seed_and_repeat_by_seed(
    cologne1: Scenario, closing: Callable[[Any], Any]
) -> None:
    # isolated (libsumo's default): the child runs the draw the parent made
    sim = closing(TrafficSimulation(cologne1, SimulationOptions(demand=RESAMPLE),
                                    program="static"))
    assert sim.isolate
    first = episode(sim, 0)
    assert episode(sim, 0) == first
    others = [episode(sim, seed)[0] for seed in (1, 2)]
    assert len({first[0], *others}) == 3, (first[0], others)
    fixed = closing(TrafficSimulation(cologne1, program="static"))
    assert episode(fixed, 0)[0] == episode(fixed, 1)[0]  # the same trips on every seed
