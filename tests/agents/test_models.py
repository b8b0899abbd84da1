"""The policy network's masking of missing phases, and the padding of observations."""

from __future__ import annotations

import numpy as np
import torch

from agents.models import MASKED, SignalNetwork, pad


def test_phases_an_intersection_lacks_are_masked_and_the_rest_untouched() -> None:
    torch.manual_seed(0)
    net = SignalNetwork([3, 2], [4, 2], hidden=(8,), kind="actor-critic")
    obs, agent = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    scores, value = net(obs, agent)
    raw = net.bodies[0](obs)
    assert torch.equal(scores[agent == 0], raw[agent == 0, :4])
    assert torch.equal(scores[agent == 1, :2], raw[agent == 1, :2])
    assert (scores[agent == 1, 2:] == MASKED).all()
    assert torch.equal(value, raw[:, -1])


def test_where_every_intersection_has_every_phase_the_scores_are_the_outputs() -> None:
    torch.manual_seed(0)
    net = SignalNetwork([3, 3], [2, 2], hidden=(8,))
    obs, agent = torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1])
    scores, value = net(obs, agent)
    assert torch.equal(scores, net.bodies[0](obs))
    assert torch.equal(value, torch.zeros(5))
    scores.sum().backward()  # the shortcut keeps the graph
    assert net.bodies[0][0].weight.grad is not None


def test_pad_zero_fills_shorter_observations_as_float32() -> None:
    out = pad([np.array([1.5, 2.0]), np.array([3.0, 4.0, 5.0]), [0.1]], 4)
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.tensor([[1.5, 2.0, 0.0, 0.0], [3.0, 4.0, 5.0, 0.0],
                                          [0.1, 0.0, 0.0, 0.0]], dtype=torch.float32))
