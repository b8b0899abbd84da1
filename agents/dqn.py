"""Deep Q-learning for signal control: double DQN with a target network and a replay buffer.

Every intersection's transition at every decision step goes into one replay
buffer; with a shared network all intersections learn from all of it. The
exploration rate falls linearly from ``epsilon_start`` to ``epsilon_end``
over the first ``exploration`` share of the decision steps (Mnih et al.,
"Human-level control through deep reinforcement learning", Nature 518, 2015;
van Hasselt, Guez, Silver, "Deep Reinforcement Learning with Double
Q-learning", AAAI 2016).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from agents.models import SignalNetwork
from agents.optim import (
    ConfigError,
    GradientStepper,
    OptimConfig,
    batch_size,
    refuse_unknown,
)


@dataclass(frozen=True)
class DQNConfig:
    """Settings of the DQN learner."""

    gamma: float = 0.9
    """Discount per decision step."""
    buffer_size: int = 50_000
    """Transitions kept in the replay buffer (oldest dropped first)."""
    learning_starts: int = 1_000
    """Transitions collected before the first update."""
    train_every: int = 1
    """Decision steps between updates."""
    target_every: int = 500
    """Updates between copies of the online network into the target network."""
    epsilon_start: float = 1.0
    """Exploration rate at the start."""
    epsilon_end: float = 0.05
    """Exploration rate after the decay."""
    exploration: float = 0.3
    """Share of all decision steps over which the exploration rate decays."""
    double: bool = True
    """Double DQN: the online network picks the next action, the target network values it."""

    def __post_init__(self) -> None:
        checks = {
            "gamma": 0 <= self.gamma < 1,
            "buffer_size": self.buffer_size >= 1,
            "learning_starts": self.learning_starts >= 0,
            "train_every": self.train_every >= 1,
            "target_every": self.target_every >= 1,
            "epsilon_start": 0 <= self.epsilon_start <= 1,
            "epsilon_end": 0 <= self.epsilon_end <= 1,
            "exploration": 0 < self.exploration <= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"dqn.{name}: invalid value {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DQNConfig:
        """Build from a plain mapping; unknown keys are refused."""
        refuse_unknown(cls, data, "dqn")
        return cls(**data)


class ReplayBuffer:
    """A ring buffer of (observation, intersection, action, reward, next observation)."""

    def __init__(self, capacity: int, obs_size: int) -> None:
        self.capacity = capacity
        self.obs = np.zeros((capacity, obs_size), dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_size), dtype=np.float32)
        self.agent = np.zeros(capacity, dtype=np.int64)
        self.action = np.zeros(capacity, dtype=np.int64)
        self.reward = np.zeros(capacity, dtype=np.float32)
        self.size = 0
        self.head = 0

    def add(self, obs: np.ndarray, agent: np.ndarray, action: np.ndarray, reward: np.ndarray,
            next_obs: np.ndarray) -> None:
        """Append a batch of transitions."""
        for i in range(len(agent)):
            h = self.head
            self.obs[h], self.next_obs[h] = obs[i], next_obs[i]
            self.agent[h], self.action[h], self.reward[h] = agent[i], action[i], reward[i]
            self.head = (h + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """``n`` transitions drawn uniformly (all of them, in order, when ``n`` is the size)."""
        idx = np.arange(self.size) if n >= self.size else rng.integers(0, self.size, n)
        return {
            "obs": torch.from_numpy(self.obs[idx]),
            "next_obs": torch.from_numpy(self.next_obs[idx]),
            "agent": torch.from_numpy(self.agent[idx]),
            "action": torch.from_numpy(self.action[idx]),
            "reward": torch.from_numpy(self.reward[idx]),
        }

    def state_dict(self) -> dict[str, Any]:
        """The filled part, as tensors (for checkpoints)."""
        n = self.size
        return {
            "obs": torch.from_numpy(self.obs[:n].copy()),
            "next_obs": torch.from_numpy(self.next_obs[:n].copy()),
            "agent": torch.from_numpy(self.agent[:n].copy()),
            "action": torch.from_numpy(self.action[:n].copy()),
            "reward": torch.from_numpy(self.reward[:n].copy()),
            "head": self.head,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        n = int(state["obs"].shape[0])
        self.obs[:n], self.next_obs[:n] = state["obs"].numpy(), state["next_obs"].numpy()
        self.agent[:n], self.action[:n] = state["agent"].numpy(), state["action"].numpy()
        self.reward[:n] = state["reward"].numpy()
        self.size, self.head = n, int(state["head"])


class DQN:
    """The learner: acts epsilon-greedily, stores transitions, and updates the Q-network.

    Args:
        net: the online Q-network.
        config: DQN settings.
        optim: optimiser, schedule and batch settings.
        total_steps: decision steps planned for the whole training (for the schedules).
        rng: random generator for exploration and sampling.
    """

    def __init__(self, net: SignalNetwork, config: DQNConfig, optim: OptimConfig,
                 total_steps: int, rng: np.random.Generator) -> None:
        self.net = net
        self.target = copy.deepcopy(net).requires_grad_(False)
        self.config = config
        self.optim = optim
        self.rng = rng
        self.total_steps = max(1, total_steps)
        self.buffer = ReplayBuffer(config.buffer_size, net.obs_size)
        self.stepper = GradientStepper(net, optim, max(1, total_steps // config.train_every))
        self.steps = 0

    @property
    def epsilon(self) -> float:
        """Current exploration rate."""
        c = self.config
        progress = min(1.0, self.steps / (c.exploration * self.total_steps))
        return c.epsilon_start + progress * (c.epsilon_end - c.epsilon_start)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, agent: torch.Tensor, *, explore: bool) -> np.ndarray:
        """A phase per row: greedy, or random with probability epsilon when exploring."""
        scores, _ = self.net(obs, agent)
        action = scores.argmax(dim=1).numpy()
        if explore:
            random = self.rng.random(len(action)) < self.epsilon
            phases = np.asarray(self.net.num_phases)[agent.numpy()]
            action = np.where(random, self.rng.integers(0, phases), action)
        return action

    def observe(self, obs: torch.Tensor, agent: torch.Tensor, action: np.ndarray,
                reward: np.ndarray, next_obs: torch.Tensor) -> list[dict[str, float]]:
        """Store one decision step's transitions; update when due. Returns the update logs."""
        self.buffer.add(obs.numpy(), agent.numpy(), action, reward, next_obs.numpy())
        self.steps += 1
        due = self.steps % self.config.train_every == 0
        if not due or self.buffer.size < max(self.config.learning_starts, 1):
            return []
        return [self.update()]

    def update(self) -> dict[str, float]:
        """One gradient step on a batch from the replay buffer."""
        c = self.config
        batch = self.buffer.sample(batch_size(self.optim, self.buffer.size), self.rng)
        scores, _ = self.net(batch["obs"], batch["agent"])
        q = scores.gather(1, batch["action"][:, None]).squeeze(1)
        with torch.no_grad():
            target_scores, _ = self.target(batch["next_obs"], batch["agent"])
            if c.double:
                online_next, _ = self.net(batch["next_obs"], batch["agent"])
                best = online_next.argmax(dim=1, keepdim=True)
                next_q = target_scores.gather(1, best).squeeze(1)
            else:
                next_q = target_scores.max(dim=1).values
            # the horizon is a time limit, not a terminal state: always bootstrap
            target = batch["reward"] + c.gamma * next_q
        loss = F.smooth_l1_loss(q, target)
        log = self.stepper.step(loss)
        if self.stepper.updates % c.target_every == 0:
            self.target.load_state_dict(self.net.state_dict())
        log["update"] = self.stepper.updates
        log["epsilon"] = self.epsilon
        log["q_mean"] = float(q.detach().mean())
        return log

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly."""
        return {
            "net": self.net.state_dict(),
            "target": self.target.state_dict(),
            "stepper": self.stepper.state_dict(),
            "buffer": self.buffer.state_dict(),
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.net.load_state_dict(state["net"])
        self.target.load_state_dict(state["target"])
        self.stepper.load_state_dict(state["stepper"])
        self.buffer.load_state_dict(state["buffer"])
        self.steps = int(state["steps"])
