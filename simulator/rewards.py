"""Reward functions, computed from the same roadside sensors as the observations.

Each rewards one intersection for the decision step that just ended; ``dt``
is that step's length in seconds. ``reward_all`` gives every intersection's
reward at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from simulator.observations import _same_views
from simulator.sensors import Readings
from simulator.view import SignalView


class RewardFunction(ABC):
    """Maps one intersection's sensor readings after a step to a reward."""

    needs_exits: bool = False
    """Whether it reads the exit detectors on outgoing lanes."""

    @abstractmethod
    def __call__(self, view: SignalView, readings: Readings, dt: float) -> float:
        """The reward for the step that just ended."""

    def reward_all(self, views: Sequence[SignalView], readings: Readings, dt: float) -> np.ndarray:
        """Every intersection's reward, in ``views`` order."""
        return np.array([self(v, readings, dt) for v in views])

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _EntrySum(RewardFunction):
    """A reward that is minus a per-detector quantity summed over the incoming lanes."""

    def per_detector(self, readings: Readings, limit: np.ndarray, dt: float) -> np.ndarray:
        """The quantity on every detector."""
        raise NotImplementedError

    def __call__(self, view: SignalView, readings: Readings, dt: float) -> float:
        """The reward."""
        return float(self.reward_all([view], readings, dt)[0])

    def reward_all(self, views: Sequence[SignalView], readings: Readings, dt: float) -> np.ndarray:
        """Summed per intersection with one ``reduceat`` over the entry detectors."""
        if not _same_views(getattr(self, "_views", None), views, len(readings.queue)):
            limit = np.ones(len(readings.queue))
            for v in views:
                limit[v.entry] = v.entry_speed_limit
            entries = np.concatenate([v.entry for v in views])
            starts = np.cumsum([0] + [len(v.entry) for v in views])[:-1]
            self._views = (len(readings.queue), tuple(views))
            self._plan = (entries, starts, limit)
        entries, starts, limit = self._plan
        values = self.per_detector(readings, limit, dt)[entries]
        return -np.add.reduceat(values, starts)


class DelayReward(_EntrySum):
    """Minus the delay (vehicle-seconds) that the incoming lanes accrued during the step.

    A vehicle at mean speed v on a lane with limit V loses (1 - v/V) of each
    second, so the step adds ``count * (1 - v/V) * dt``: the change in the
    intersection's cumulative delay.
    """

    def per_detector(self, readings: Readings, limit: np.ndarray, dt: float) -> np.ndarray:
        """Delay accrued on each detector."""
        speed = np.fmin(readings.speed / limit, 1.0)  # fmin turns an empty lane's NaN into 1
        return readings.count * (1.0 - speed) * dt


class WaitingTimeReward(_EntrySum):
    """Minus the waiting (halted) vehicle-seconds on the incoming lanes during the step."""

    def per_detector(self, readings: Readings, limit: np.ndarray, dt: float) -> np.ndarray:
        """Waiting accrued on each detector."""
        return readings.queue * dt


class QueueReward(_EntrySum):
    """Minus the number of halting vehicles on the incoming lanes."""

    def per_detector(self, readings: Readings, limit: np.ndarray, dt: float) -> np.ndarray:
        """Queue on each detector."""
        return readings.queue


class PressureReward(RewardFunction):
    """Minus the absolute pressure: vehicles on incoming minus outgoing lanes."""

    needs_exits = True

    def __call__(self, view: SignalView, readings: Readings, dt: float) -> float:
        """The reward."""
        return -abs(float(readings.count[view.entry].sum() - readings.count[view.exit].sum()))


REWARDS: dict[str, type[RewardFunction]] = {
    "delay": DelayReward,
    "waiting-time": WaitingTimeReward,
    "queue": QueueReward,
    "pressure": PressureReward,
}
