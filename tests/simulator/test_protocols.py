"""Protocol presets: the benchmarks' values, the defaults untouched, an episode under RESCO."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from networks import Scenario
from simulator import protocols
from simulator.core import TrafficSimulation
from simulator.intersection import layout_of
from simulator.options import SimulationOptions, validation_message
from simulator.protocols import UNLIMITED_GREEN_S, ProtocolError

TIMING = ("decision_interval", "yellow", "all_red", "min_green", "max_green", "detector_length")


def timing(options: SimulationOptions) -> tuple[Any, ...]:
    return tuple(getattr(options, key) for key in TIMING)


# -------------------------------------------------------------------- the presets
def test_the_protocols_are_greenphase_resco_and_sumo_rl() -> None:
    assert protocols.NAMES == ("greenphase", "resco", "sumo-rl")
    assert protocols.DEFAULT == "greenphase"


def test_greenphase_is_the_defaults_exactly() -> None:
    assert SimulationOptions.for_protocol("greenphase") == SimulationOptions()
    assert SimulationOptions.for_protocol("greenphase", "arterial4x4") == SimulationOptions()


@pytest.mark.parametrize(
    ("name", "network", "expected"),
    [
        # map_config.py: step_length 10, yellow_length 3; agent_config.py: max_distance 200
        ("resco", "cologne1", (10.0, 3.0, 0.0, 7.0, UNLIMITED_GREEN_S, 200.0)),
        ("resco", "grid4x4", (10.0, 3.0, 0.0, 7.0, UNLIMITED_GREEN_S, 200.0)),
        ("resco", None, (10.0, 3.0, 0.0, 7.0, UNLIMITED_GREEN_S, 200.0)),
        # arterial4x4 has its own: step_length 5, yellow_length 2
        ("resco", "arterial4x4", (5.0, 2.0, 0.0, 3.0, UNLIMITED_GREEN_S, 200.0)),
        # env.py: delta_time 5, yellow_time 2, min_green 5; max_green is never applied
        ("sumo-rl", "cologne1", (5.0, 2.0, 0.0, 5.0, UNLIMITED_GREEN_S, None)),
        ("sumo-rl", "arterial4x4", (5.0, 2.0, 0.0, 5.0, UNLIMITED_GREEN_S, None)),
    ],
)
def test_preset_values(name: str, network: str | None, expected: tuple[Any, ...]) -> None:
    options = SimulationOptions.for_protocol(name, network)
    assert timing(options) == expected
    assert options.protocol == name


def test_resco_min_green_is_what_its_step_leaves_after_the_yellow() -> None:
    for network in ("cologne1", "arterial4x4"):
        own = protocols.get("resco").for_network(network)
        assert own.yellow_s is not None
        assert own.min_green == own.decision_interval - own.yellow_s


def test_every_preset_records_its_source() -> None:
    for preset in protocols.PROTOCOLS.values():
        assert preset.source


# ----------------------------------------------------------------- options of a preset
def test_explicit_settings_win_over_the_preset() -> None:
    options = SimulationOptions.for_protocol("resco", "cologne1", decision_interval=5.0, yellow=4)
    assert (options.decision_interval, options.yellow, options.min_green) == (5.0, 4.0, 7.0)
    assert options.protocol == "resco"


def test_a_preset_keeps_the_other_settings_of_the_options_it_is_given() -> None:
    base = SimulationOptions(faults="dropout=0.1", first_wait=True, decision_interval=20.0)
    options = SimulationOptions.for_protocol("sumo-rl", "cologne1", base)
    assert (options.faults, options.first_wait) == ("dropout=0.1", True)
    assert options.decision_interval == 5.0  # the preset's; explicit ones go in as changes


def test_defaults_record_greenphase_and_the_programs_clearance() -> None:
    options = SimulationOptions()
    assert (options.yellow, options.all_red, options.protocol) == (None, None, "greenphase")
    assert options.sumo_arguments() == ()
    assert SimulationOptions.for_protocol("resco").sumo_arguments() == ()


@pytest.mark.parametrize(
    ("changes", "words"),
    [({"yellow": 0}, "yellow"), ({"all_red": -1}, "all_red"),
     ({"yellow": float("inf")}, "finite"), ({"protocol": "rescoo"}, "unknown protocol")],
)
def test_bad_clearance_or_protocol_is_one_line(changes: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError) as err:
        SimulationOptions(**changes)
    message = validation_message(err.value, "--protocol")
    assert "\n" not in message
    assert words in message


def test_unknown_protocol_is_one_line_listing_the_known_ones() -> None:
    with pytest.raises(ProtocolError) as err:
        SimulationOptions.for_protocol("resco2", "cologne1")
    assert isinstance(err.value, ValueError)
    assert str(err.value) == "unknown protocol 'resco2'; choose from greenphase, resco, sumo-rl"


# ------------------------------------------------------------------- the simulation
def test_default_options_build_the_layouts_of_the_networks_programs(
    cologne1: Scenario, closing: Callable[[Any], Any]
) -> None:
    sim = closing(TrafficSimulation(cologne1))
    net = cologne1.net
    assert sim.layouts == [
        layout_of(net.programs[t], net.links[t], min_green=5.0, max_green=50.0)
        for t in net.tls_ids
    ]


def test_an_episode_under_resco_decides_every_10_s_and_may_change_at_each(
    cologne1: Scenario, closing: Callable[[Any], Any]
) -> None:
    options = SimulationOptions.for_protocol("resco", "cologne1")
    sim = closing(TrafficSimulation(cologne1, options, isolate=False))
    (lay,) = sim.layouts
    assert (lay.yellow, lay.all_red, lay.min_green) == (3.0, 0.0, 7.0)
    assert sim.detectors.lengths.max() <= 200.0
    sim.start(0)
    sim.step([0])  # the first green starts with the episode; it is held for min_green too
    times, states = [sim.time], []
    for k in range(12):
        wished = (k + 1) % lay.num_phases
        sim.step([wished])
        times.append(sim.time)
        states.append((sim.connection.trafficlight.getRedYellowGreenState(lay.tls_id), wished))
    assert {b - a for a, b in zip(times, times[1:])} == {10.0}
    # a change shows 3 s of yellow, then the wished green for the 7 s left of the step
    assert all(state == lay.green_states[wished] for state, wished in states)


def test_a_protocol_keyword_applies_the_preset() -> None:
    options = SimulationOptions.from_keywords(None, {"protocol": "resco", "min_green": 9}, "env")
    assert timing(options) == (10.0, 3.0, 0.0, 9.0, UNLIMITED_GREEN_S, 200.0)
    own = SimulationOptions.from_keywords(None, {"protocol": "resco"}, "env", "arterial4x4")
    assert own.decision_interval == 5.0
    with pytest.raises(ValueError, match="^env: unknown protocol 'x'; choose from greenphase"):
        SimulationOptions.from_keywords(None, {"protocol": "x"}, "env")


def test_an_environment_takes_a_protocol(cologne1: Scenario, closing: Callable[[Any], Any]) -> None:
    from simulator.env import TrafficSignalEnv

    env = closing(TrafficSignalEnv(cologne1, protocol="resco"))
    assert env.sim.decision_interval == 10.0
    assert (env.sim.layouts[0].yellow, env.sim.options.protocol) == (3.0, "resco")
