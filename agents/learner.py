"""The learner interface: what a training loop asks of DQN, PPO and federated DQN alike.

At each decision step the loop asks :meth:`Learner.act` for every
intersection's phase and hands the step's transitions to
:meth:`Learner.observe`; after the last step of an episode it calls
:meth:`Learner.end_of_episode`. Both return the logs of the updates they made
(one dict per gradient step, with at least ``lr`` and ``update``). A learner
updates when it chooses: DQN at every few steps, PPO after whole episodes.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch

from agents.models import SignalNetwork


class Learner(ABC):
    """Acts, learns from transitions, and saves everything needed to continue exactly."""

    net: SignalNetwork
    """The policy a run saves (for federated training, the global model)."""

    @abstractmethod
    def act(self, obs: torch.Tensor, agent: torch.Tensor, *, explore: bool) -> np.ndarray:
        """A phase per row of ``obs`` (``agent``: each row's intersection).

        ``explore`` is set while training and clear in a greedy evaluation.
        """

    @abstractmethod
    def observe(self, obs: torch.Tensor, agent: torch.Tensor, action: np.ndarray,
                reward: np.ndarray, next_obs: torch.Tensor) -> list[dict[str, float]]:
        """Learn from one decision step's transitions; the logs of any updates it made."""

    def end_of_episode(self) -> list[dict[str, float]]:
        """Close a training episode; the logs of any updates it made."""
        return []

    @property
    def epsilon(self) -> float:
        """Current exploration rate of an epsilon-greedy learner (NaN for any other)."""
        return math.nan

    @property
    def episode_bytes(self) -> float:
        """Bytes exchanged at the end of the last episode (NaN where nothing is exchanged)."""
        return math.nan

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly (tensors and primitives only)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
