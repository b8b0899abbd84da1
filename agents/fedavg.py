"""What crosses between federated clients and the server, and how the server averages it.

:class:`Channel` is the only path: a client's weights and its sample count up,
the global weights down, each checked to be exactly the model's tensors and
counted in bytes as serialised. :class:`Server` holds the global model and
averages the clients' weights into it (FedAvg, weighted by samples or uniform).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from agents.models import SignalNetwork

WEIGHTINGS = ("samples", "uniform")
"""How the server weighs the clients: by the samples of the round, or all alike."""

SAMPLE_COUNT_BYTES = 8
"""Bytes of the sample count that travels beside each client's weights (one int64)."""


@dataclass(frozen=True)
class WeightUpdate:
    """What one client sends the server at the end of a round."""

    client: int
    """Index of the client's intersection."""
    weights: dict[str, torch.Tensor]
    """The client's network state dict."""
    samples: int
    """Transitions the client collected this round (its weight in the average)."""


class ChannelError(RuntimeError):
    """A payload that is not exactly the model's weights (extra or missing keys, wrong shapes)."""


class Channel:
    """The only path between clients and the server: weights in, bytes counted, weights out.

    Every payload is checked to hold exactly the reference model's state-dict
    keys, each a tensor of the reference's shape and dtype, then serialised
    with ``torch.save`` and read back with ``torch.load(weights_only=True)``,
    as it would be on a real link. Observations, rewards and transitions have
    no key to travel under.

    Args:
        reference: the state dict of the model whose weights may cross.
    """

    def __init__(self, reference: Mapping[str, torch.Tensor]) -> None:
        self.layout = {k: (tuple(v.shape), v.dtype) for k, v in reference.items()}
        self.bytes_up = 0
        """Bytes sent by clients to the server so far."""
        self.bytes_down = 0
        """Bytes sent by the server to clients so far."""

    @property
    def bytes_total(self) -> int:
        """Bytes exchanged in both directions so far."""
        return self.bytes_up + self.bytes_down

    def check(self, payload: Mapping[str, Any]) -> None:
        """Refuse anything but the reference model's tensors under its parameter names.

        Raises:
            ChannelError: A key is missing or extra, or a value is not a tensor of the
                reference's shape and dtype.
        """
        keys, expected = set(payload), set(self.layout)
        if keys != expected:
            extra, missing = sorted(keys - expected), sorted(expected - keys)
            raise ChannelError(f"payload refused: extra keys {extra}, missing keys {missing}")
        for key, value in payload.items():
            if not isinstance(value, torch.Tensor):
                raise ChannelError(f"payload refused: {key!r} is a {type(value).__name__}")
            if (tuple(value.shape), value.dtype) != self.layout[key]:
                raise ChannelError(
                    f"payload refused: {key!r} has shape {tuple(value.shape)} {value.dtype}, "
                    f"the model's is {self.layout[key][0]} {self.layout[key][1]}"
                )

    def transmit(self, payload: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
        """Send one payload over the link: check, serialise, deserialise, check again.

        Returns:
            The payload as the receiver reads it, and the bytes on the wire.
        """
        self.check(payload)
        buffer = io.BytesIO()
        # clone: a view would drag its whole storage onto the wire
        torch.save({k: v.detach().clone() for k, v in payload.items()}, buffer)
        wire = buffer.getvalue()
        received = torch.load(io.BytesIO(wire), map_location="cpu", weights_only=True)
        self.check(received)
        return received, len(wire)

    def upload(self, update: WeightUpdate) -> WeightUpdate:
        """Client to server: the client's weights and its sample count."""
        weights, size = self.transmit(update.weights)
        self.bytes_up += size + SAMPLE_COUNT_BYTES
        return WeightUpdate(int(update.client), weights, int(update.samples))

    def download(self, weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Server to one client: the global weights."""
        received, size = self.transmit(weights)
        self.bytes_down += size
        return received

    def state_dict(self) -> dict[str, int]:
        """The byte counters."""
        return {"bytes_up": self.bytes_up, "bytes_down": self.bytes_down}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the byte counters."""
        self.bytes_up, self.bytes_down = int(state["bytes_up"]), int(state["bytes_down"])


class Server:
    """Holds the global model and averages the clients' weights into it.

    Args:
        net: the global model (updated in place by :meth:`aggregate`).
        weighting: ``samples`` (FedAvg) or ``uniform``.
    """

    def __init__(self, net: SignalNetwork, weighting: str = "samples") -> None:
        self.net = net
        self.weighting = weighting
        self.rounds = 0

    def weights(self) -> dict[str, torch.Tensor]:
        """The global model's state dict."""
        return self.net.state_dict()

    def aggregate(self, updates: list[WeightUpdate]) -> dict[str, torch.Tensor]:
        """Average the clients' weights into the global model and return its new state dict.

        Each floating tensor becomes ``sum_k n_k w_k / sum_k n_k`` with ``n_k``
        the client's samples (or 1 each for ``uniform``, and when no client has
        a sample); other tensors (the phase mask) are the same everywhere and
        are kept.
        """
        if not updates:
            raise ValueError("aggregate needs at least one client update")
        counts = [float(u.samples) for u in updates]
        if self.weighting == "uniform" or sum(counts) <= 0:
            counts = [1.0] * len(updates)
        total = sum(counts)
        averaged: dict[str, torch.Tensor] = {}
        for key, current in self.net.state_dict().items():
            if not current.is_floating_point():
                averaged[key] = current.clone()
                continue
            acc = torch.zeros_like(current, dtype=torch.float64)
            for update, count in zip(updates, counts, strict=True):
                acc += update.weights[key].to(torch.float64) * (count / total)
            averaged[key] = acc.to(current.dtype)
        self.net.load_state_dict(averaged)
        self.rounds += 1
        return self.weights()
