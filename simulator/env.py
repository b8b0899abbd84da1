"""The Gymnasium environment: every signal of a network driven by one agent.

The action is the green phase each signal should show (``Discrete`` for one
signal, ``MultiDiscrete`` for several); the observation is the concatenation
of every intersection's observation vector, in :attr:`tls_ids` order. The
episode is truncated at the scenario's horizon; the last step's ``info``
carries the episode's KPIs and per-trip rows.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from networks import DEFAULT_NETWORK, Scenario
from simulator.core import EpisodeResult, SignalProgram
from simulator.envbase import build_simulation, joint_space, signal_spaces, sumo_seed
from simulator.observations import ObservationFunction, QueueObservation
from simulator.rewards import DelayReward, RewardFunction
from simulator.sensors import SensorModel
from simulator.sumo import Backend


class TrafficSignalEnv(gym.Env[np.ndarray, Any]):
    """A SUMO network as a Gymnasium environment whose observations come from detectors.

    Args:
        network: registry name (``"cologne1"``, ``"grid-3x3"``, ...) or a scenario.
        observation: observation function (default :class:`QueueObservation`).
        reward: reward function (default :class:`DelayReward`); the reward is
            the sum over intersections.
        decision_interval: seconds between decisions.
        min_green: shortest green in seconds.
        max_green: longest green in seconds.
        program: run a SUMO program (``"static"``, ``"actuated"``, ``"webster"``)
            instead of obeying actions; the actions are then ignored.
        sensor_model: how readings reach the observation (default: exact); rewards
            are computed from the true readings.
        detector_length: cap on a detector's length in metres.
        exit_detectors: place detectors on outgoing lanes; by default only
            when the observation or reward reads them.
        backend: ``"libsumo"`` or ``"traci"``.
        gui: run sumo-gui (TraCI only).
        sumo_args: extra SUMO arguments.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        network: str | Scenario = DEFAULT_NETWORK,
        *,
        observation: ObservationFunction | None = None,
        reward: RewardFunction | None = None,
        decision_interval: float = 5.0,
        min_green: float = 5.0,
        max_green: float = 50.0,
        program: SignalProgram | None = None,
        sensor_model: SensorModel | None = None,
        detector_length: float | None = None,
        exit_detectors: bool | None = None,
        backend: Backend = "libsumo",
        gui: bool = False,
        sumo_args: tuple[str, ...] = (),
    ) -> None:
        self.observation_fn = observation or QueueObservation()
        self.reward_fn = reward or DelayReward()
        self.sim = build_simulation(
            network,
            self.observation_fn,
            self.reward_fn,
            decision_interval=decision_interval,
            min_green=min_green,
            max_green=max_green,
            program=program,
            sensor_model=sensor_model,
            detector_length=detector_length,
            exit_detectors=exit_detectors,
            backend=backend,
            gui=gui,
            sumo_args=sumo_args,
        )
        boxes, phases = signal_spaces(self.observation_fn, self.sim.views)
        self._slices = np.cumsum([0] + [b.shape[0] for b in boxes])
        self.observation_space = joint_space(boxes)
        self.action_space: spaces.Space[Any] = (
            phases[0] if len(phases) == 1 else spaces.MultiDiscrete([int(p.n) for p in phases])
        )
        self.result: EpisodeResult | None = None

    @property
    def tls_ids(self) -> list[str]:
        """The signals, in the order of the action and observation."""
        return self.sim.tls_ids

    def observation_slice(self, index: int) -> slice:
        """Where intersection ``index``'s features sit in the observation vector."""
        return slice(int(self._slices[index]), int(self._slices[index + 1]))

    def _observe(self) -> np.ndarray:
        readings = self.sim.readings
        assert readings is not None
        return self.observation_fn.observe_all(self.sim.views, readings)

    def _info(self) -> dict[str, Any]:
        return {"time": self.sim.time, "queue": self.sim.queue_history[-1]}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new episode; ``seed`` is also SUMO's random seed."""
        super().reset(seed=seed)
        self.result = None
        self.sim.start(sumo_seed(seed, self.np_random))
        return self._observe(), self._info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply the wished-for greens for one decision interval."""
        start = self.sim.time
        phases = None if self.sim.program is not None else np.atleast_1d(np.asarray(action))
        self.sim.step(phases)
        readings = self.sim.true_readings  # rewarded for what happened, not what sensors said
        assert readings is not None
        dt = self.sim.time - start
        reward = float(self.reward_fn.reward_all(self.sim.views, readings, dt).sum())
        obs = self._observe()
        info = self._info()
        truncated = self.sim.done
        if truncated:
            self.result = self.sim.finish()
            info["episode_kpis"] = self.result.kpis
            info["trips"] = self.result.trips
        return obs, reward, False, truncated, info

    def close(self) -> None:
        """Stop SUMO and remove temporary files."""
        self.sim.close()
