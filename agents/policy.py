"""A saved policy: reading it from a run's checkpoint, and acting with it as a controller.

A trained run stores its policy as a network's weights and the metadata
that rebuilds it (observation sizes, phases, hidden widths, the observation
function, the signals it was trained for). :func:`load_policy` reads it;
:class:`PolicyController` holds what ``trained:RUN`` and ``exported:FILE`` share:
the check that the network is the policy's own, and the padded observations
the network takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from agents.base import Controller
from agents.checkpoint import load as load_checkpoint
from agents.errors import TrainedPolicyError
from agents.models import SignalNetwork
from simulator.cleaning import MissingFlags
from simulator.observations import OBSERVATIONS, ObservationFunction
from simulator.options import SimulationOptions
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
    data = load_checkpoint(policy_path(run))
    policy = data.get("policy")
    if not isinstance(policy, dict) or "net" not in policy:
        raise TrainedPolicyError(f"{run}: the checkpoint holds no policy")
    net = build_network(policy)
    try:
        net.load_state_dict(policy["net"])
    except RuntimeError as err:
        raise TrainedPolicyError(f"{run}: policy weights do not fit its network ({err})") from None
    return net.eval(), policy


def check_signals(policy: dict[str, Any], network: str, tls_ids: Sequence[str],
                  run: Path | str) -> None:
    """Refuse a network whose signals are not those ``policy`` was trained on.

    Raises:
        TrainedPolicyError: Other signals (a policy that names none passes).
    """
    trained_on = list(policy.get("tls_ids", tls_ids))
    if trained_on != list(tls_ids):
        raise TrainedPolicyError(
            f"{run} was trained on network {policy.get('network')!r} ({len(trained_on)} "
            f"signals), not {network!r} ({len(tls_ids)} signals)")


def policy_options(policy: dict[str, Any]) -> SimulationOptions:
    """The simulation options a checkpoint's ``policy`` metadata was trained with.

    The metadata holds the decision interval (a policy acts once per interval); the other
    settings, and the interval of a policy that lacks it, are the defaults.
    """
    stored = policy.get("decision_interval")
    if stored is None:
        return SimulationOptions()
    return SimulationOptions(decision_interval=float(stored))


def observation_of(policy: dict[str, Any], run: Path | str = "") -> ObservationFunction:
    """The observation function a checkpoint's ``policy`` metadata was trained with."""
    name = policy.get("observation", "queue")
    if name not in OBSERVATIONS:
        raise TrainedPolicyError(f"{run}: unknown observation {name!r}")
    observation = OBSERVATIONS[name]()
    return MissingFlags(observation) if policy.get("missing_flags") else observation


class PolicyController(Controller):
    """Acts with a saved policy on the observations it was made with, padded to one width.

    A subclass sets :attr:`source` (where the policy came from), :attr:`meta` (its
    ``tls_ids``, ``obs_dims`` and ``network``) and :attr:`observation`.
    """

    error: ClassVar[type[TrainedPolicyError]] = TrainedPolicyError
    """What a policy that does not fit the network raises."""
    made_for: ClassVar[str] = "trained on"
    """How the policy came to fit its network, in the message that refuses another."""
    sizes_of: ClassVar[str] = "training"
    """Whose observation sizes another network's would differ from."""

    source: Path
    meta: dict[str, Any]
    observation: ObservationFunction

    def reset(self, views: Sequence[SignalView], seed: int) -> None:
        """Check that the network is the one the policy was made for."""
        tls = [v.layout.tls_id for v in views]
        if tls != list(self.meta["tls_ids"]):
            raise self.error(
                f"{self.source} was {self.made_for} network {self.meta.get('network')!r} "
                f"({len(self.meta['tls_ids'])} signals), not this one ({len(tls)} signals)"
            )
        self._sizes = [self.observation.space(v).shape[0] for v in views]
        if self._sizes != list(self.meta["obs_dims"]):
            raise self.error(f"{self.source}: observation sizes differ from {self.sizes_of}")
        self._agents = np.arange(len(views), dtype=np.int64)

    def padded(self, views: Sequence[SignalView], readings: Readings) -> np.ndarray:
        """Each intersection's observation as a row (float32 ``[N, obs_size]``), zero-padded.

        A reading still missing (NaN from a faulty sensor, no cleaning) enters as 0.
        """
        flat = np.nan_to_num(self.observation.observe_all(views, readings), nan=0.0)
        obs = np.zeros((len(views), max(self.meta["obs_dims"])), dtype=np.float32)
        start = 0
        for i, size in enumerate(self._sizes):
            obs[i, :size] = flat[start : start + size]
            start += size
        return obs
