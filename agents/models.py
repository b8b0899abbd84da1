"""Policy networks small enough for an edge controller: MLPs over one intersection's features.

A network sees one intersection at a time: its observation vector (padded
with zeros to the longest in the network) and answers for that
intersection's green phases (the rest masked out). With ``shared=True`` one
set of weights serves every intersection; otherwise each intersection has
its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

MASKED = -1e9
"""Score given to phases an intersection does not have."""


def mlp(inputs: int, hidden: Sequence[int], outputs: int) -> nn.Sequential:
    """Fully connected layers with ReLU between them."""
    layers: list[nn.Module] = []
    size = inputs
    for width in hidden:
        layers += [nn.Linear(size, width), nn.ReLU()]
        size = width
    layers.append(nn.Linear(size, outputs))
    return nn.Sequential(*layers)


class SignalNetwork(nn.Module):
    """Per-intersection heads: Q-values (``kind="q"``) or policy logits and a value.

    Args:
        obs_dims: observation length of each intersection.
        num_phases: green phases of each intersection.
        hidden: widths of the hidden layers.
        shared: one set of weights for every intersection.
        kind: ``"q"`` for a Q-network, ``"actor-critic"`` for logits and a state value.
    """

    def __init__(
        self,
        obs_dims: Sequence[int],
        num_phases: Sequence[int],
        hidden: Sequence[int] = (64, 64),
        *,
        shared: bool = True,
        kind: str = "q",
    ) -> None:
        super().__init__()
        if kind not in ("q", "actor-critic"):
            raise ValueError(f"unknown network kind {kind!r}")
        self.obs_dims = list(obs_dims)
        self.num_phases = list(num_phases)
        self.obs_size = max(self.obs_dims)
        self.max_phases = max(self.num_phases)
        self.shared = shared
        self.kind = kind
        outputs = self.max_phases + (1 if kind == "actor-critic" else 0)
        self.outputs = outputs
        count = 1 if shared else len(self.obs_dims)
        self.bodies = nn.ModuleList(mlp(self.obs_size, hidden, outputs) for _ in range(count))
        mask = torch.zeros(len(self.num_phases), self.max_phases, dtype=torch.bool)
        for i, n in enumerate(self.num_phases):
            mask[i, :n] = True
        self.register_buffer("valid", mask)
        self._every_phase_valid = all(n == self.max_phases for n in self.num_phases)

    def forward(self, obs: torch.Tensor, agent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores per phase (masked) and, for actor-critic, the state value (else zeros).

        Args:
            obs: ``[batch, obs_size]`` padded observations.
            agent: ``[batch]`` intersection index of each row.
        """
        if self.shared:
            out = self.bodies[0](obs)
        else:
            out = obs.new_empty(obs.shape[0], self.outputs)
            for i, body in enumerate(self.bodies):
                rows = agent == i
                if rows.any():
                    out[rows] = body(obs[rows])
        if self._every_phase_valid:  # nothing to mask
            scores = out[:, : self.max_phases]
        else:
            valid: torch.Tensor = self.valid  # type: ignore[assignment]  # a registered buffer
            scores = out[:, : self.max_phases].masked_fill(~valid[agent], MASKED)
        value = out[:, -1] if self.kind == "actor-critic" else out.new_zeros(out.shape[0])
        return scores, value

    def parameter_count(self) -> int:
        """Number of weights."""
        return sum(p.numel() for p in self.parameters())


def pad(observations: Sequence[torch.Tensor] | Sequence, size: int) -> torch.Tensor:
    """Stack per-intersection observation vectors, zero-padded to ``size``."""
    out = np.zeros((len(observations), size), dtype=np.float32)
    for i, obs in enumerate(observations):
        vec = np.asarray(obs, dtype=np.float32)
        out[i, : vec.shape[0]] = vec
    return torch.from_numpy(out)
