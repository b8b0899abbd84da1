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
from typing import Any

import numpy as np
import torch

from agents import checkpoint
from agents.base import Controller
from agents.errors import TrainedPolicyError
from agents.models import SignalNetwork
from agents.normalize import RunningNormalizer
from simulator.cleaning import MissingFlags
from simulator.observations import OBSERVATIONS, ObservationFunction
from simulator.sensors import Readings
from simulator.view import SignalView


def policy_path(run: Path) -> Path:
    """The checkpoint a run is evaluated with: the best by evaluation delay, else the last."""
    if run.is_file():
        return run
    for name in ("best.pt", "last.pt"):
        path = run / "checkpoints" / name
        if path.is_file():
            return path
    raise TrainedPolicyError(f"{run} holds no trained policy (no checkpoints/best.pt or last.pt)")


def build_network(policy: dict[str, Any]) -> SignalNetwork:
    """The network a checkpoint's ``policy`` metadata describes (weights not loaded)."""
    return SignalNetwork(
        policy["obs_dims"], policy["num_phases"], tuple(policy["hidden"]),
        shared=bool(policy["shared"]), kind=policy["kind"],
    )


def load_policy(run: Path) -> tuple[SignalNetwork, dict[str, Any]]:
    """The trained network of a run, in evaluation mode, with its metadata."""
    data = checkpoint.load(policy_path(run))
    policy = data.get("policy")
    if not isinstance(policy, dict) or "net" not in policy:
        raise TrainedPolicyError(f"{run}: the checkpoint holds no policy")
    net = build_network(policy)
    try:
        net.load_state_dict(policy["net"])
    except RuntimeError as err:
        raise TrainedPolicyError(f"{run}: policy weights do not fit its network ({err})") from None
    return net.eval(), policy


def observation_of(policy: dict[str, Any], run: Path | str = "") -> ObservationFunction:
    """The observation function a checkpoint's ``policy`` metadata was trained with."""
    name = policy.get("observation", "queue")
    if name not in OBSERVATIONS:
        raise TrainedPolicyError(f"{run}: unknown observation {name!r}")
    observation = OBSERVATIONS[name]()
    return MissingFlags(observation) if policy.get("missing_flags") else observation


class TrainedController(Controller):
    """Acts greedily with a trained network on the observations it was trained with."""

    name = "trained"

    def __init__(self, run: str | Path) -> None:
        self.run = Path(run)
        self.net, self.policy = load_policy(self.run)
        self.name = f"trained:{run}"  # type: ignore[misc]
        self.observation: ObservationFunction = observation_of(self.policy, self.run)
        self.normalizer: RunningNormalizer | None = None
        if self.policy.get("obs_norm") is not None:
            try:
                self.normalizer = RunningNormalizer.from_policy(self.policy["obs_norm"])
            except ValueError as err:
                raise TrainedPolicyError(f"{run}: {err}") from None
            if self.normalizer.mean.numel() != self.net.obs_size:
                raise TrainedPolicyError(f"{run}: obs_norm does not fit the network's input")
        self.needs_exits = self.observation.needs_exits  # type: ignore[misc]
        self._agents = torch.zeros(0, dtype=torch.long)
        self._sizes: list[int] = []

    def reset(self, views: Sequence[SignalView], seed: int) -> None:
        """Check that the network is the one the policy was trained on."""
        tls = [v.layout.tls_id for v in views]
        if tls != list(self.policy["tls_ids"]):
            raise TrainedPolicyError(
                f"{self.run} was trained on network {self.policy.get('network')!r} "
                f"({len(self.policy['tls_ids'])} signals), not this one ({len(tls)} signals)"
            )
        self._sizes = [self.observation.space(v).shape[0] for v in views]
        if self._sizes != list(self.policy["obs_dims"]):
            raise TrainedPolicyError(f"{self.run}: observation sizes differ from training")
        self._agents = torch.arange(len(views))

    @torch.no_grad()
    def act(self, views: Sequence[SignalView], readings: Readings, dt: float) -> np.ndarray:
        """The most valued phase at each intersection."""
        flat = np.nan_to_num(self.observation.observe_all(views, readings), nan=0.0)
        obs = torch.zeros(len(views), self.net.obs_size)
        start = 0
        for i, size in enumerate(self._sizes):
            obs[i, :size] = torch.from_numpy(flat[start : start + size])
            start += size
        if self.normalizer is not None:
            obs = self.normalizer(obs)
        scores, _ = self.net(obs, self._agents)
        return scores.argmax(dim=1).numpy()
