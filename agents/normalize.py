"""Observation normalisation by running statistics, stored with the policy it belongs to.

:class:`RunningNormalizer` keeps the running mean and variance of the
(padded) observation vectors a learner sees (Welford's algorithm, merged a
batch at a time as Chan, Golub and LeVeque give it) and turns each
observation into ``(x - mean) / std``. It learns while training explores and
is frozen when a policy is evaluated or deployed.

A checkpoint's ``policy`` metadata holds it as
``"obs_norm": {"mean": tensor, "std": tensor, "count": float}``; whoever runs
the policy (``trained:RUN``, an exported model) computes ``(x - mean) / std``
on the padded observation before the network. ``std`` is floored at
:data:`MIN_STD`, so a feature that hardly varied in training cannot blow up
(observations lie in [-1, 1], so a normalised value stays within 40).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

MIN_STD = 0.05
"""Smallest standard deviation an observation feature is divided by."""


class RunningNormalizer:
    """Running mean and variance of observation vectors, and the normalisation they give.

    Args:
        size: length of an observation vector.
    """

    def __init__(self, size: int) -> None:
        self.count = 0.0
        self.mean = torch.zeros(size, dtype=torch.float64)
        self._m2 = torch.zeros(size, dtype=torch.float64)
        self.frozen = False  # while frozen (evaluation, deployment) update() changes nothing

    @property
    def var(self) -> torch.Tensor:
        """Population variance of every feature (0 before any observation)."""
        return self._m2 / self.count if self.count else torch.zeros_like(self._m2)

    @property
    def std(self) -> torch.Tensor:
        """Standard deviation of every feature, at least :data:`MIN_STD`."""
        return self.var.sqrt().clamp(min=MIN_STD)

    def update(self, batch: torch.Tensor | np.ndarray) -> None:
        """Take in a batch of observations (one per row), unless frozen."""
        if self.frozen:
            return
        x = torch.as_tensor(batch, dtype=torch.float64).reshape(-1, self.mean.numel())
        n = float(x.shape[0])
        if n == 0:
            return
        batch_mean = x.mean(dim=0)
        batch_m2 = ((x - batch_mean) ** 2).sum(dim=0)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self._m2 = self._m2 + batch_m2 + delta**2 * (self.count * n / total)
        self.count = total

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        """``(obs - mean) / std``, in the observation's dtype."""
        return ((obs - self.mean.to(obs.dtype)) / self.std.to(obs.dtype)).to(obs.dtype)

    def policy_state(self) -> dict[str, Any]:
        """What a policy needs to apply it: ``{"mean", "std", "count"}`` (float32 tensors)."""
        return {"mean": self.mean.float(), "std": self.std.float(), "count": float(self.count)}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the statistics (for resuming training)."""
        return {"mean": self.mean.clone(), "m2": self._m2.clone(), "count": float(self.count)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`."""
        self.mean = torch.as_tensor(state["mean"], dtype=torch.float64).clone()
        self._m2 = torch.as_tensor(state["m2"], dtype=torch.float64).clone()
        self.count = float(state["count"])

    @classmethod
    def from_policy(cls, obs_norm: dict[str, Any]) -> RunningNormalizer:
        """A frozen normaliser from a checkpoint's ``policy["obs_norm"]``.

        Raises:
            ValueError: the entry is malformed.
        """
        try:
            mean = torch.as_tensor(obs_norm["mean"], dtype=torch.float64).flatten()
            std = torch.as_tensor(obs_norm["std"], dtype=torch.float64).flatten()
            count = float(obs_norm["count"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"obs_norm needs mean, std and count ({err})") from None
        if mean.shape != std.shape or not bool((std > 0).all()):
            raise ValueError("obs_norm: mean and std must match in length, std be > 0")
        out = cls(mean.numel())
        # the stored std is used as it is: the variance it came from is std**2
        out.mean, out._m2, out.count = mean, std**2 * max(count, 1.0), max(count, 1.0)
        out.frozen = True
        return out
