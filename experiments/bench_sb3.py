"""Stable-Baselines3 on sumo-rl's multi-agent env, for ``greenphase bench --train``.

Imported only where stable-baselines3 is installed (the ``bench`` extra).
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from experiments.bench_train import UNLIKE_SIGNALS, vehicles_on


class SharedSignals(VecEnv):
    """sumo-rl's multi-agent env as an SB3 ``VecEnv`` with one environment per signal.

    One DQN then decides for every signal with one set of weights. Every decision step
    all signals act (sumo-rl's signals act together when they share the decision
    interval); at the horizon each signal's last observation goes into its info as
    ``terminal_observation`` and a new episode starts, as SB3's own vector envs do. The
    vehicles in or waiting to enter the network are counted after every step.

    Raises:
        ValueError: The signals' observation or action spaces differ.
    """

    def __init__(self, env: Any) -> None:
        self.env = env
        self.ids: list[str] = list(env.ts_ids)
        observations = [env.observation_spaces(ts) for ts in self.ids]
        actions = [env.action_spaces(ts) for ts in self.ids]
        if any(o != observations[0] for o in observations) or \
                any(a != actions[0] for a in actions):
            raise ValueError(UNLIKE_SIGNALS)
        self.render_mode = None
        self.counts: list[int] = []
        self._actions: np.ndarray | None = None
        super().__init__(len(self.ids), observations[0], actions[0])

    def _stack(self, observations: dict[str, np.ndarray]) -> np.ndarray:
        return np.stack([observations[ts] for ts in self.ids])

    def reset(self) -> np.ndarray:
        """Start an episode, on the SUMO seed the sumo-rl env was built with."""
        return self._stack(self.env.reset())

    def step_async(self, actions: np.ndarray) -> None:
        """Keep one phase per signal for :meth:`step_wait`."""
        self._actions = actions

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """One decision step of every signal; a new episode begins after the horizon."""
        assert self._actions is not None
        chosen = {ts: int(a) for ts, a in zip(self.ids, self._actions, strict=True)}
        observations, rewards, dones, _ = self.env.step(chosen)
        self.counts.append(vehicles_on(self.env.sumo))
        obs = self._stack(observations)
        reward = np.array([rewards[ts] for ts in self.ids], dtype=np.float32)
        infos: list[dict[str, Any]] = [{} for _ in self.ids]
        done = bool(dones["__all__"])
        if done:
            for info, last in zip(infos, obs, strict=True):
                info.update({"terminal_observation": last, "TimeLimit.truncated": True})
            obs = self.reset()
        return obs, reward, np.full(self.num_envs, done), infos

    def vehicles(self) -> float:
        """Vehicles in or waiting to enter the network, on average over the steps."""
        return statistics.fmean(self.counts)

    def close(self) -> None:
        """End the simulation."""
        self.env.close()

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        """The attribute of this env, once per signal (they all share it)."""
        return [getattr(self, attr_name)] * len(list(self._get_indices(indices)))

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        """Set the attribute of this env, which every signal shares."""
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None,
                   **method_kwargs: Any) -> list[Any]:
        """Not offered: one sumo-rl env stands behind every signal."""
        raise NotImplementedError(f"{method_name}: one sumo-rl env stands behind every signal")

    def env_is_wrapped(self, wrapper_class: Any, indices: Any = None) -> list[bool]:
        """No signal's env is wrapped."""
        return [False] * len(list(self._get_indices(indices)))
