"""Deep Q-learning for signal control: double DQN with a target network and a replay buffer.

Every intersection's transition at every decision step goes into one replay
buffer; with a shared network all intersections learn from all of it. The
exploration rate falls linearly from ``epsilon_start`` to ``epsilon_end``
over the first ``exploration`` share of the decision steps (Mnih et al.,
"Human-level control through deep reinforcement learning", Nature 518, 2015;
van Hasselt, Guez, Silver, "Deep Reinforcement Learning with Double
Q-learning", AAAI 2016).

With several simulations stepping at once, one :meth:`DQN.observe` brings
every simulation's step, and the learner counts each as a decision step of
its own: exploration, ``train_every``, the target copies and the schedules
run as if the simulations had run one after the other. The updates that fall
due in one step of all N simulations are made as one gradient step on their
batches together (N batches of ``batch_size``, drawn at once), as vectorised
DQNs do: each transition is replayed as often as with one simulation, and a
step of N simulations costs one update rather than N, which is what lets the
learner keep up with N simulations on N cores. One simulation is unchanged.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from agents.learner import Learner
from agents.models import SignalNetwork
from agents.optim import GradientStepper, OptimConfig, batch_size
from agents.settings import Settings


class DQNConfig(Settings):
    """Settings of the DQN learner."""

    section: ClassVar[str] = "dqn"

    gamma: float = Field(default=0.9, ge=0, lt=1)
    """Discount per decision step."""
    buffer_size: int = Field(default=50_000, ge=1)
    """Transitions kept in the replay buffer (oldest dropped first)."""
    learning_starts: int = Field(default=1_000, ge=0)
    """Transitions collected before the first update."""
    train_every: int = Field(default=1, ge=1)
    """Decision steps between updates."""
    target_every: int = Field(default=500, ge=1)
    """Updates between copies of the online network into the target network."""
    epsilon_start: float = Field(default=1.0, ge=0, le=1)
    """Exploration rate at the start."""
    epsilon_end: float = Field(default=0.05, ge=0, le=1)
    """Exploration rate after the decay."""
    exploration: float = Field(default=0.3, gt=0, le=1)
    """Share of all decision steps over which the exploration rate decays."""
    double: bool = True
    """Double DQN: the online network picks the next action, the target network values it."""


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


def epsilon_at(config: DQNConfig, steps: int, total_steps: int) -> float:
    """The exploration rate after ``steps`` of the ``total_steps`` decision steps."""
    progress = min(1.0, steps / (config.exploration * total_steps))
    return config.epsilon_start + progress * (config.epsilon_end - config.epsilon_start)


def epsilon_greedy(greedy: np.ndarray, phases: np.ndarray, epsilon: float,
            rng: np.random.Generator) -> np.ndarray:
    """Each greedy phase replaced, with probability ``epsilon``, by one drawn below ``phases``."""
    random = rng.random(len(greedy)) < epsilon
    return np.where(random, rng.integers(0, phases), greedy)


def update_due(config: DQNConfig, steps: int, stored: int) -> bool:
    """Whether decision step ``steps`` updates, with ``stored`` transitions at hand."""
    return steps % config.train_every == 0 and stored >= max(config.learning_starts, 1)


def td_target(config: DQNConfig, reward: torch.Tensor, target_next: torch.Tensor,
              online_next: torch.Tensor | None) -> torch.Tensor:
    """``reward + gamma * Q(next state)``; phases are the last dimension of the scores.

    With ``online_next`` (double DQN) the online network picks the next phase and the
    target network values it; without, the target network's best value counts.
    """
    if online_next is not None:
        best = online_next.argmax(dim=-1, keepdim=True)
        next_q = target_next.gather(-1, best).squeeze(-1)
    else:
        next_q = target_next.max(dim=-1).values
    # the horizon is a time limit, not a terminal state: always bootstrap
    return reward + config.gamma * next_q


class DQN(Learner):
    """The learner: acts epsilon-greedily, stores transitions, and updates the Q-network.

    Args:
        net: the online Q-network.
        config: DQN settings.
        optim: optimiser, schedule and batch settings.
        total_steps: decision steps planned for the whole training, of all simulations
            together (for the schedules).
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
        """Decision steps observed, of all simulations together."""
        self.slots = 0
        """Updates due so far (several of them are one gradient step when they fall due in
        the same step of several simulations): the target copies follow them."""

    @property
    def epsilon(self) -> float:
        """Current exploration rate."""
        return epsilon_at(self.config, self.steps, self.total_steps)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, agent: torch.Tensor, *, explore: bool) -> np.ndarray:
        """A phase per row: greedy, or random with probability epsilon when exploring."""
        epsilon = self.epsilon if explore else 0.0
        if epsilon >= 1.0:  # every row draws its phase: the network's choice would go unused
            action = np.zeros(len(agent), dtype=np.int64)
        else:
            scores, _ = self.net(obs, agent)
            action = scores.argmax(dim=1).numpy()
        if not explore:
            return action
        phases = np.asarray(self.net.num_phases)[agent.numpy()]
        return epsilon_greedy(action, phases, epsilon, self.rng)

    def observe(self, obs: torch.Tensor, agent: torch.Tensor, action: np.ndarray,
                reward: np.ndarray, next_obs: torch.Tensor) -> list[dict[str, float]]:
        """Store one decision step's transitions; update when due. Returns the update logs.

        The rows may hold the step of several simulations, each with every intersection.
        """
        self.buffer.add(obs.numpy(), agent.numpy(), action, reward, next_obs.numpy())
        due = 0
        for _ in range(max(1, len(agent) // len(self.net.obs_dims))):  # each simulation's step
            self.steps += 1
            due += update_due(self.config, self.steps, self.buffer.size)
        return [self.update(due)] if due else []

    def update(self, slots: int = 1) -> dict[str, float]:
        """One gradient step on ``slots`` batches from the replay buffer, drawn together."""
        c = self.config
        size = batch_size(self.optim, self.buffer.size)
        if slots > 1 and size < self.buffer.size:
            size = min(size * slots, self.buffer.size)
        batch = self.buffer.sample(size, self.rng)
        scores, _ = self.net(batch["obs"], batch["agent"])
        q = scores.gather(1, batch["action"][:, None]).squeeze(1)
        with torch.no_grad():
            target_scores, _ = self.target(batch["next_obs"], batch["agent"])
            online_next = self.net(batch["next_obs"], batch["agent"])[0] if c.double else None
            target = td_target(c, batch["reward"], target_scores, online_next)
        loss = F.smooth_l1_loss(q, target)
        log = self.stepper.step(loss, slots=slots)
        self.slots += slots
        if self.slots // c.target_every > (self.slots - slots) // c.target_every:
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
            "slots": self.slots,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.net.load_state_dict(state["net"])
        self.target.load_state_dict(state["target"])
        self.stepper.load_state_dict(state["stepper"])
        self.buffer.load_state_dict(state["buffer"])
        self.steps = int(state["steps"])
        self.slots = int(state.get("slots", self.stepper.updates))  # before merged updates
