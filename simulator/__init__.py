"""SUMO as Gymnasium and PettingZoo environments whose observations come from roadside sensors.

Importing the package registers ``greenphase/<network>-v0`` for every
registered network; SUMO itself is only located when an environment is built.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from networks import DEFAULT_NETWORK, Scenario, names
from simulator.core import EpisodeResult, TrafficSimulation
from simulator.env import TrafficSignalEnv
from simulator.intersection import Layout, ProgramError
from simulator.observations import ObservationFunction, PressureObservation, QueueObservation
from simulator.options import SimulationOptions
from simulator.rewards import (
    DelayReward,
    PressureReward,
    QueueReward,
    RewardFunction,
    WaitingTimeReward,
)
from simulator.sensors import Readings, SensorModel
from simulator.sumo import SumoError


def parallel_env(network: str | Scenario = DEFAULT_NETWORK, **options: Any) -> Any:
    """The PettingZoo ParallelEnv of a network: one agent per signal."""
    from simulator.parallel import TrafficSignalParallelEnv

    return TrafficSignalParallelEnv(network, **options)


def _register() -> None:
    for name in names():
        env_id = f"greenphase/{name}-v0"
        if env_id not in gym.registry:
            gym.register(
                env_id,
                entry_point=TrafficSignalEnv,  # type: ignore[arg-type]  # keyword-only options
                kwargs={"network": name},
            )


_register()

__all__ = [
    "DelayReward",
    "EpisodeResult",
    "Layout",
    "ObservationFunction",
    "PressureObservation",
    "PressureReward",
    "ProgramError",
    "QueueObservation",
    "QueueReward",
    "Readings",
    "RewardFunction",
    "SensorModel",
    "SimulationOptions",
    "SumoError",
    "TrafficSignalEnv",
    "TrafficSimulation",
    "WaitingTimeReward",
    "parallel_env",
]
