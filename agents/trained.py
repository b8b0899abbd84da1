"""A trained policy as a controller: ``trained:RUN`` in a comparison.

The controller rebuilds the observation function and the network it was
trained with from the run's checkpoint, computes the same observations from
the detector readings, and picks each signal's most valued phase. A reading
still missing (NaN from a faulty sensor, no cleaning) enters as 0; a policy
trained with ``zero-flag`` cleaning also sees the missing flags, and one trained
with normalisation gets ``(x - mean) / std`` of its ``obs_norm`` statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from agents.errors import TrainedPolicyError
from agents.normalize import RunningNormalizer
from agents.policy import (
    PolicyController,
    build_network,
    load_policy,
    observation_of,
    policy_path,
)
from simulator.sensors import Readings
from simulator.view import SignalView

__all__ = [
    "TrainedController",
    "TrainedPolicyError",
    "build_network",
    "load_policy",
    "observation_of",
    "policy_path",
]


class TrainedController(PolicyController):
    """Acts greedily with a trained network on the observations it was trained with."""

    name = "trained"

    def __init__(self, run: str | Path) -> None:
        self.run = self.source = Path(run)
        self.net, self.policy = load_policy(self.run)
        self.meta = self.policy
        self.name = f"trained:{run}"  # type: ignore[misc]
        self.observation = observation_of(self.policy, self.run)
        self.normalizer: RunningNormalizer | None = None
        if self.policy.get("obs_norm") is not None:
            try:
                self.normalizer = RunningNormalizer.from_policy(self.policy["obs_norm"])
            except ValueError as err:
                raise TrainedPolicyError(f"{run}: {err}") from None
            if self.normalizer.mean.numel() != self.net.obs_size:
                raise TrainedPolicyError(f"{run}: obs_norm does not fit the network's input")
        self.needs_exits = self.observation.needs_exits  # type: ignore[misc]

    @torch.no_grad()
    def act(self, views: Sequence[SignalView], readings: Readings, dt: float) -> np.ndarray:
        """The most valued phase at each intersection."""
        obs = torch.from_numpy(self.padded(views, readings))
        if self.normalizer is not None:
            obs = self.normalizer(obs)
        scores, _ = self.net(obs, torch.from_numpy(self._agents))
        return scores.argmax(dim=1).numpy()
