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

from simulator.envbase import (
    SignalEnvBase,
    check_seed,
    integer_phases,
    joint_space,
    sumo_seed,
)


class TrafficSignalEnv(SignalEnvBase, gym.Env[np.ndarray, Any]):
    """A SUMO network as a Gymnasium environment whose observations come from detectors.

    Takes the arguments of :class:`~simulator.envbase.SignalEnvBase`: the network, then
    ``options``, ``observation``, ``reward``, ``program``, ``exit_detectors``,
    ``sensor_model``, ``backend``, ``gui`` and any :class:`SimulationOptions` field by
    keyword (``gymnasium.make("greenphase/cologne1-v0", decision_interval=10)``). The
    reward is the sum over intersections.
    """

    metadata = {"render_modes": []}

    def _set_spaces(self, boxes: list[spaces.Box], phases: list[spaces.Discrete]) -> None:
        self._slices = np.cumsum([0] + [b.shape[0] for b in boxes])
        self.observation_space = joint_space(boxes)
        self.action_space: spaces.Space[Any] = (
            phases[0] if len(phases) == 1 else spaces.MultiDiscrete([int(p.n) for p in phases])
        )

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
        """Start a new episode; ``seed`` (0 to 2**31 - 1) is also SUMO's random seed.

        Raises:
            ValueError: A seed that is not an integer SUMO takes.
        """
        seed = check_seed(seed)
        super().reset(seed=seed)
        self.result = None
        self.sim.start(sumo_seed(seed, self.np_random))
        return self._observe(), self._info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply the wished-for greens for one decision interval.

        Raises:
            ValueError: An action that is not whole phase numbers, or out of range.
        """
        start = self.sim.time
        phases = None if self.sim.program is not None else integer_phases(action)
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
