"""Running observation statistics: they match NumPy's, freeze, and survive a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.normalize import MIN_STD, RunningNormalizer


def batches(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    scale = np.array([1.0, 0.5, 0.2, 0.0])  # the last feature never varies
    return [rng.normal(0.3, 1.0, size=(int(rng.integers(1, 40)), 4)) * scale for _ in range(30)]


def test_running_mean_and_std_match_numpy_over_uneven_batches() -> None:
    norm = RunningNormalizer(4)
    parts = batches()
    for part in parts:
        norm.update(part)
    data = np.concatenate(parts)
    assert norm.count == len(data)
    np.testing.assert_allclose(norm.mean.numpy(), data.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(norm.var.numpy(), data.var(axis=0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(norm.std.numpy()[:3], data.std(axis=0)[:3], rtol=1e-10)
    assert norm.std[3].item() == MIN_STD, "a constant feature is divided by the floor"
    x = torch.as_tensor(data[:5], dtype=torch.float32)
    expected = (data[:5] - data.mean(axis=0)) / np.maximum(data.std(axis=0), MIN_STD)
    np.testing.assert_allclose(norm(x).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert norm(x).dtype == torch.float32


def test_one_row_at_a_time_equals_one_batch() -> None:
    data = np.concatenate(batches(1))
    rowwise, whole = RunningNormalizer(4), RunningNormalizer(4)
    for row in data:
        rowwise.update(row)
    whole.update(data)
    torch.testing.assert_close(rowwise.mean, whole.mean)
    torch.testing.assert_close(rowwise.var, whole.var)


def test_frozen_statistics_do_not_move() -> None:
    norm = RunningNormalizer(4)
    norm.update(np.ones((3, 4)))
    norm.frozen = True
    norm.update(np.full((10, 4), 5.0))
    assert norm.count == 3 and norm.mean.tolist() == [1.0] * 4


def test_policy_state_and_training_state_round_trip() -> None:
    norm = RunningNormalizer(4)
    for part in batches(2):
        norm.update(part)
    policy = norm.policy_state()
    assert set(policy) == {"mean", "std", "count"}
    assert policy["mean"].dtype == torch.float32 and isinstance(policy["count"], float)
    applied = RunningNormalizer.from_policy(policy)
    assert applied.frozen
    x = torch.randn(6, 4)
    torch.testing.assert_close(applied(x), norm(x), rtol=1e-5, atol=1e-5)
    resumed = RunningNormalizer(4)
    resumed.load_state_dict(norm.state_dict())
    more = np.ones((5, 4))
    norm.update(more)
    resumed.update(more)
    torch.testing.assert_close(resumed.mean, norm.mean)
    torch.testing.assert_close(resumed.var, norm.var)


@pytest.mark.parametrize(
    "bad",
    [{"mean": torch.zeros(3)}, {"mean": torch.zeros(3), "std": torch.zeros(3), "count": 1.0},
     {"mean": torch.zeros(3), "std": torch.ones(2), "count": 1.0}],
)
def test_a_malformed_obs_norm_is_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match="obs_norm"):
        RunningNormalizer.from_policy(bad)
