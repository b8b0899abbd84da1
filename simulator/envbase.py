"""What the Gymnasium and the PettingZoo environments share: the simulation and the spaces."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from gymnasium import spaces

from networks import Scenario
from simulator.core import SignalProgram, TrafficSimulation
from simulator.observations import ObservationFunction
from simulator.rewards import RewardFunction
from simulator.sensors import SensorModel
from simulator.sumo import Backend
from simulator.view import SignalView


def build_simulation(
    network: str | Scenario,
    observation: ObservationFunction,
    reward: RewardFunction,
    *,
    decision_interval: float = 5.0,
    min_green: float = 5.0,
    max_green: float = 50.0,
    program: SignalProgram | None = None,
    sensor_model: SensorModel | None = None,
    detector_length: float | None = None,
    exit_detectors: bool | None = None,
    backend: Backend = "libsumo",
    gui: bool = False,
    sumo_args: Sequence[str] = (),
) -> TrafficSimulation:
    """The simulation an environment needs for its observation and reward functions.

    Args:
        network: registry name or scenario.
        observation: the observation function; decides whether detectors report
            the first vehicle's waiting time.
        reward: the reward function.
        decision_interval: seconds between decisions.
        min_green: shortest green in seconds.
        max_green: longest green in seconds.
        program: a SUMO program to run instead of obeying actions.
        sensor_model: how readings reach the observation (default: exact).
        detector_length: cap on a detector's length in metres.
        exit_detectors: place detectors on outgoing lanes; ``None`` places them
            only when the observation or the reward reads them.
        backend: ``"libsumo"`` or ``"traci"``.
        gui: run sumo-gui (TraCI only).
        sumo_args: extra SUMO arguments.

    Returns:
        The simulation, not yet started.
    """
    if exit_detectors is None:
        exit_detectors = observation.needs_exits or reward.needs_exits
    return TrafficSimulation(
        network,
        decision_interval=decision_interval,
        min_green=min_green,
        max_green=max_green,
        program=program,
        sensor_model=sensor_model,
        detector_length=detector_length,
        first_wait=observation.needs_first_wait,
        exit_detectors=exit_detectors,
        backend=backend,
        gui=gui,
        sumo_args=sumo_args,
    )


def signal_spaces(
    observation: ObservationFunction, views: Sequence[SignalView]
) -> tuple[list[spaces.Box], list[spaces.Discrete]]:
    """Each intersection's observation space and action space (its green phases)."""
    boxes = [observation.space(v) for v in views]
    phases = [spaces.Discrete(v.layout.num_phases) for v in views]
    return boxes, phases


def joint_space(boxes: Sequence[spaces.Box]) -> spaces.Box:
    """The observation space of every intersection's vector concatenated, in order."""
    return spaces.Box(
        np.concatenate([b.low for b in boxes]),
        np.concatenate([b.high for b in boxes]),
        dtype=np.float32,
    )


def sumo_seed(seed: int | None, rng: np.random.Generator) -> int:
    """SUMO's random seed for an episode: ``seed`` itself, or a draw from ``rng``."""
    return int(seed) if seed is not None else int(rng.integers(2**31 - 1))
