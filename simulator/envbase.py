"""What the Gymnasium and the PettingZoo environments share: construction and the spaces."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from networks import DEFAULT_NETWORK, Scenario
from simulator.core import EpisodeResult, SignalProgram, TrafficSimulation
from simulator.observations import ObservationFunction, QueueObservation
from simulator.options import SimulationOptions
from simulator.rewards import DelayReward, RewardFunction
from simulator.sensors import SensorModel
from simulator.sumo import Backend
from simulator.view import SignalView


def build_simulation(
    network: str | Scenario,
    observation: ObservationFunction,
    reward: RewardFunction,
    options: SimulationOptions | None = None,
    *,
    program: SignalProgram | None = None,
    exit_detectors: bool | None = None,
    sensor_model: SensorModel | None = None,
    backend: Backend = "libsumo",
    gui: bool = False,
) -> TrafficSimulation:
    """The simulation an environment needs for its observation and reward functions.

    Args:
        network: registry name or scenario.
        observation: the observation function; detectors report the first vehicle's
            waiting time when it reads it (or the options ask for it).
        reward: the reward function.
        options: how the scenario is simulated (default: the defaults).
        program: a SUMO program to run instead of obeying actions.
        exit_detectors: place detectors on outgoing lanes; ``None`` places them
            only when the observation or the reward reads them.
        sensor_model: a sensor model of one's own (default: the options').
        backend: ``"libsumo"`` or ``"traci"``.
        gui: run sumo-gui (TraCI only).

    Returns:
        The simulation, not yet started.
    """
    options = options if options is not None else SimulationOptions()
    if observation.needs_first_wait and not options.first_wait:
        options = SimulationOptions.of(options, first_wait=True)
    if exit_detectors is None:
        exit_detectors = observation.needs_exits or reward.needs_exits
    return TrafficSimulation(
        network,
        options,
        program=program,
        exit_detectors=exit_detectors,
        sensor_model=sensor_model,
        backend=backend,
        gui=gui,
    )


class SignalEnvBase:
    """The construction and the end of both environments; each sets its own spaces.

    Args:
        network: registry name (``"cologne1"``, ``"grid-3x3"``, ...) or a scenario.
        options: how the scenario is simulated (:class:`SimulationOptions`); the
            keyword ``settings`` are applied on top of it.
        observation: observation function (default :class:`QueueObservation`).
        reward: reward function (default :class:`DelayReward`); rewards are
            computed from the true readings, whatever the sensors say.
        program: run a SUMO program (``"static"``, ``"actuated"``, ``"webster"``,
            ``"coordinated"``) instead of obeying actions; the actions are then ignored.
        exit_detectors: place detectors on outgoing lanes; by default only
            when the observation or reward reads them.
        sensor_model: a sensor model of one's own (default: the options' faults
            and cleaning, exact when none).
        backend: ``"libsumo"`` or ``"traci"``.
        gui: run sumo-gui (TraCI only).
        **settings: fields of :class:`SimulationOptions` (``decision_interval``,
            ``min_green``, ``max_green``, ``detector_length``, ``faults``,
            ``sumo_args``, ...).

    Raises:
        TypeError: a keyword that is no simulation setting.
        ValueError: a setting's value is invalid (one line naming it).
    """

    def __init__(
        self,
        network: str | Scenario = DEFAULT_NETWORK,
        *,
        options: SimulationOptions | None = None,
        observation: ObservationFunction | None = None,
        reward: RewardFunction | None = None,
        program: SignalProgram | None = None,
        exit_detectors: bool | None = None,
        sensor_model: SensorModel | None = None,
        backend: Backend = "libsumo",
        gui: bool = False,
        **settings: Any,
    ) -> None:
        self.observation_fn = observation or QueueObservation()
        self.reward_fn = reward or DelayReward()
        self.sim = build_simulation(
            network,
            self.observation_fn,
            self.reward_fn,
            SimulationOptions.from_keywords(options, settings, type(self).__name__),
            program=program,
            exit_detectors=exit_detectors,
            sensor_model=sensor_model,
            backend=backend,
            gui=gui,
        )
        self.result: EpisodeResult | None = None
        self._set_spaces(*signal_spaces(self.observation_fn, self.sim.views))

    @property
    def options(self) -> SimulationOptions:
        """How the scenario is simulated."""
        return self.sim.options

    def _set_spaces(self, boxes: list[spaces.Box], phases: list[spaces.Discrete]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop SUMO and remove temporary files."""
        self.sim.close()


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


SEEDS = range(0, 2**31)
"""The seeds an episode takes: SUMO's ``--seed`` is a 32-bit signed integer, and a demand
seed of :mod:`networks.demand` is one of these too."""


def check_seed(seed: Any) -> int | None:
    """``seed`` as an ``int`` (or None), if it is an integer SUMO takes.

    Raises:
        ValueError: Anything else, in one line naming the range.
    """
    if seed is None:
        return None
    # int() first: a range tests a NumPy integer by walking through it
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or int(seed) not in SEEDS:
        raise ValueError(f"seed must be an integer from {SEEDS.start} to {SEEDS.stop - 1} "
                         f"(SUMO's seeds), got {seed!r}")
    return int(seed)


def sumo_seed(seed: int | None, rng: np.random.Generator) -> int:
    """SUMO's random seed for an episode: ``seed`` itself, or a draw from ``rng``."""
    return int(seed) if seed is not None else int(rng.integers(2**31 - 1))


def integer_phases(action: Any, what: str = "action") -> np.ndarray:
    """The wished-for greens of an action as integers, refusing any that is not a whole number.

    Integers of any kind (``2``, ``np.int64(2)``, an integer array) pass, and so do floats
    that are whole (``2.0``); ``0.7`` is refused rather than taken as phase 0.

    Raises:
        ValueError: A value that is not a whole number, in one line.
    """
    array = np.atleast_1d(np.asarray(action))
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    whole = array.dtype.kind == "f" and bool(np.all(np.isfinite(array))) \
        and bool(np.all(array == np.round(array)))
    if not whole:
        raise ValueError(f"{what} must be a whole phase number (an integer), got {action!r}")
    return array.astype(np.int64)
