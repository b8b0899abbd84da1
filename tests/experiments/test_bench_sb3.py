"""SB3's DQN on a multi-signal sumo-rl env: one VecEnv environment per signal."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from gymnasium import spaces

pytest.importorskip("stable_baselines3")

from experiments.bench_sb3 import SharedSignals  # noqa: E402 - after the skip


class FakeSumoRL:
    """sumo-rl's multi-agent API over three decision steps, without SUMO."""

    def __init__(self, phases: tuple[int, int] = (2, 2)) -> None:
        self.ts_ids = ["a", "b"]
        self.phases = dict(zip(self.ts_ids, phases, strict=True))
        self.t, self.resets, self.steps = 0, 0, 0
        pending = SimpleNamespace(getPendingVehicles=lambda: ["p1", "p2"])
        self.sumo = SimpleNamespace(vehicle=SimpleNamespace(getIDCount=lambda: 5),
                                    simulation=pending)

    def observation_spaces(self, ts: str) -> spaces.Box:
        return spaces.Box(0.0, 10.0, (3,), dtype=np.float32)

    def action_spaces(self, ts: str) -> spaces.Discrete:
        return spaces.Discrete(self.phases[ts])

    def _obs(self) -> dict[str, np.ndarray]:
        return {ts: np.full(3, self.t + i, dtype=np.float32) for i, ts in enumerate(self.ts_ids)}

    def reset(self) -> dict[str, np.ndarray]:
        self.t, self.resets = 0, self.resets + 1
        return self._obs()

    def step(self, actions: dict[str, int]) -> tuple[Any, ...]:
        self.t, self.steps = self.t + 1, self.steps + 1
        rewards = {ts: float(actions[ts]) for ts in self.ts_ids}
        return self._obs(), rewards, {"a": False, "b": False, "__all__": self.t >= 3}, {}

    def close(self) -> None:
        pass


def test_every_signal_is_one_environment_and_episodes_restart_at_the_horizon() -> None:
    vec = SharedSignals(FakeSumoRL())
    assert vec.num_envs == 2 and vec.action_space == spaces.Discrete(2)
    assert vec.reset().tolist() == [[0, 0, 0], [1, 1, 1]]
    for t in (1, 2):
        vec.step_async(np.array([1, 0]))
        obs, reward, done, infos = vec.step_wait()
        assert obs.tolist() == [[t] * 3, [t + 1] * 3] and reward.tolist() == [1.0, 0.0]
        assert not done.any() and infos == [{}, {}]
    vec.step_async(np.array([0, 1]))
    obs, reward, done, infos = vec.step_wait()
    assert done.all() and obs.tolist() == [[0, 0, 0], [1, 1, 1]]  # the next episode's start
    assert [i["terminal_observation"].tolist() for i in infos] == [[3, 3, 3], [4, 4, 4]]
    assert all(i["TimeLimit.truncated"] for i in infos)
    assert vec.vehicles() == 7  # in the network and waiting to enter, after every step
    assert vec.get_attr("render_mode") == [None, None] and vec.env_is_wrapped(object) == [False] * 2


def test_signals_unlike_each_other_are_refused() -> None:
    with pytest.raises(ValueError, match="unlike observations or actions"):
        SharedSignals(FakeSumoRL(phases=(2, 3)))


def test_sb3_dqn_learns_on_it_one_decision_step_per_signal_group() -> None:
    from stable_baselines3 import DQN

    env = FakeSumoRL()
    model = DQN("MlpPolicy", SharedSignals(env), learning_starts=2, batch_size=4,
                train_freq=1, policy_kwargs={"net_arch": [8]}, seed=0, device="cpu")
    model.learn(total_timesteps=12)  # SB3 counts a time step per signal: 6 decision steps
    assert env.steps == 6 and env.resets == 3 and model.num_timesteps == 12
