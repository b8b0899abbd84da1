"""Proximal policy optimisation for signal control: clipped objective, GAE, one actor-critic.

Each intersection's trajectory is its own sequence for the advantage
estimate; with a shared network every intersection's samples train the same
weights. (Schulman et al., "Proximal Policy Optimization Algorithms", 2017;
"High-Dimensional Continuous Control Using Generalized Advantage
Estimation", ICLR 2016.)

With several simulations stepping at once, each :meth:`PPO.observe` holds
every simulation's rows, each intersection of each simulation its own
trajectory, and :meth:`PPO.end_of_episode` closes one episode per simulation.
A loop may act on the next step before it observes the last one (to learn
while the simulations run): the sampled steps wait in order for their rewards.
"""

from __future__ import annotations

from collections import deque
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch.distributions import Categorical

from agents.learner import Learner
from agents.models import SignalNetwork
from agents.optim import GradientStepper, OptimConfig, batch_size
from agents.settings import Settings


class PPOConfig(Settings):
    """Settings of the PPO learner."""

    section: ClassVar[str] = "ppo"

    gamma: float = Field(default=0.95, ge=0, lt=1)
    """Discount per decision step."""
    gae_lambda: float = Field(default=0.95, ge=0, le=1)
    """GAE's lambda: bias against variance of the advantage."""
    clip: float = Field(default=0.2, gt=0, lt=1)
    """Clipping range of the probability ratio."""
    epochs: int = Field(default=4, ge=1)
    """Passes over each batch of episodes."""
    value_coef: float = Field(default=0.5, ge=0)
    """Weight of the value loss."""
    entropy_coef: float = Field(default=0.01, ge=0)
    """Weight of the entropy bonus."""
    episodes_per_update: int = Field(default=1, ge=1)
    """Episodes collected before each round of updates."""


class PPO(Learner):
    """The learner: samples phases from the policy, and updates after whole episodes.

    Args:
        net: an actor-critic :class:`SignalNetwork`.
        config: PPO settings.
        optim: optimiser, schedule and batch settings.
        total_updates: gradient steps planned for the whole training (for the schedules).
        rng: random generator for minibatch order.
    """

    def __init__(self, net: SignalNetwork, config: PPOConfig, optim: OptimConfig,
                 total_updates: int, rng: np.random.Generator) -> None:
        if net.kind != "actor-critic":
            raise ValueError("PPO needs an actor-critic network")
        self.net = net
        self.config = config
        self.optim = optim
        self.rng = rng
        self.stepper = GradientStepper(net, optim, max(1, total_updates))
        self.steps = 0
        self._episode: list[dict[str, torch.Tensor]] = []
        self._batch: list[dict[str, torch.Tensor]] = []
        self._batch_episodes = 0
        self._pending: deque[dict[str, torch.Tensor]] = deque()  # sampled, awaiting a reward

    @torch.no_grad()
    def act(self, obs: torch.Tensor, agent: torch.Tensor, *, explore: bool) -> np.ndarray:
        """A phase per row: sampled when exploring, else the most likely."""
        logits, value = self.net(obs, agent)
        if not explore:
            return logits.argmax(dim=1).numpy()
        dist = Categorical(logits=logits)
        action = dist.sample()
        self._pending.append({"obs": obs, "agent": agent, "action": action,
                              "logp": dist.log_prob(action), "value": value})
        return action.numpy()

    def observe(self, obs: torch.Tensor, agent: torch.Tensor, action: np.ndarray,
                reward: np.ndarray, next_obs: torch.Tensor) -> list[dict[str, float]]:
        """Record the oldest step :meth:`act` sampled; learning waits for the episode's end."""
        step = self._pending.popleft()
        step["reward"] = torch.as_tensor(reward, dtype=torch.float32)
        self._episode.append(step)
        self._last_obs, self._last_agent = next_obs, agent
        self.steps += 1
        return []

    def end_of_episode(self) -> list[dict[str, float]]:
        """Close the episodes' trajectories; update once enough episodes are in."""
        self._pending.clear()
        if not self._episode:
            return []
        with torch.no_grad():
            _, last_value = self.net(self._last_obs, self._last_agent)
        self._batch.append(self._advantages(self._episode, last_value))
        self._batch_episodes += max(1, len(self._last_agent) // len(self.net.obs_dims))
        self._episode = []
        if self._batch_episodes < self.config.episodes_per_update:
            return []
        data = {k: torch.cat([b[k] for b in self._batch]) for k in self._batch[0]}
        self._batch, self._batch_episodes = [], 0
        return self._update(data)

    def _advantages(self, episode: list[dict[str, torch.Tensor]],
                    last_value: torch.Tensor) -> dict[str, torch.Tensor]:
        """GAE over each intersection's trajectory; the horizon bootstraps from the value."""
        c = self.config
        rewards = torch.stack([s["reward"] for s in episode])  # [T, N]
        values = torch.stack([s["value"] for s in episode])
        advantages = torch.zeros_like(rewards)
        running = torch.zeros(rewards.shape[1])
        next_value = last_value
        for t in reversed(range(len(episode))):
            delta = rewards[t] + c.gamma * next_value - values[t]
            running = delta + c.gamma * c.gae_lambda * running
            advantages[t] = running
            next_value = values[t]
        flat = {k: torch.cat([s[k] for s in episode]) for k in ("obs", "agent", "action", "logp")}
        flat["advantage"] = advantages.reshape(-1)
        flat["return"] = (advantages + values).reshape(-1)
        return flat

    def _update(self, data: dict[str, torch.Tensor]) -> list[dict[str, float]]:
        """``epochs`` passes of clipped-objective gradient steps over the batch."""
        c = self.config
        n = data["obs"].shape[0]
        adv = data["advantage"]
        data["advantage"] = (adv - adv.mean()) / (adv.std() + 1e-8)
        size = batch_size(self.optim, n)
        logs = []
        for _ in range(c.epochs):
            order = torch.from_numpy(self.rng.permutation(n))
            for start in range(0, n, size):
                idx = order[start : start + size]
                logits, value = self.net(data["obs"][idx], data["agent"][idx])
                dist = Categorical(logits=logits)
                logp = dist.log_prob(data["action"][idx])
                ratio = torch.exp(logp - data["logp"][idx])
                a = data["advantage"][idx]
                policy_loss = -torch.min(ratio * a, ratio.clamp(1 - c.clip, 1 + c.clip) * a).mean()
                value_loss = (value - data["return"][idx]).pow(2).mean()
                entropy = dist.entropy().mean()
                loss = policy_loss + c.value_coef * value_loss - c.entropy_coef * entropy
                log = self.stepper.step(loss)
                log["entropy"] = float(entropy.detach())
                log["update"] = self.stepper.updates
                logs.append(log)
        return logs

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly, between episodes."""
        return {"net": self.net.state_dict(), "stepper": self.stepper.state_dict(),
                "steps": self.steps, "batch": list(self._batch),
                "batch_episodes": self._batch_episodes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.net.load_state_dict(state["net"])
        self.stepper.load_state_dict(state["stepper"])
        self.steps = int(state["steps"])
        self._batch = list(state.get("batch", []))
        self._batch_episodes = int(state.get("batch_episodes", len(self._batch)))
