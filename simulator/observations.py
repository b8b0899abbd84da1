"""Observation functions: what a controller sees of an intersection, built from sensors.

Each is a small object that gives its space for an intersection and its value
at a decision step. Values are normalised to [0, 1] (or [-1, 1] for pressure).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
from gymnasium import spaces

from simulator.sensors import Readings
from simulator.view import SignalView


def _same_views(
    cached: tuple[int, tuple[SignalView, ...]] | None, views: Sequence[SignalView], n_det: int
) -> bool:
    """Whether a plan cached for ``cached`` serves these very view objects."""
    return (
        cached is not None
        and cached[0] == n_det
        and len(cached[1]) == len(views)
        and all(a is b for a, b in zip(cached[1], views))
    )


class ObservationFunction(ABC):
    """Maps one intersection's sensor readings to a vector."""

    needs_first_wait: bool = False
    """Whether the detectors must report the first vehicle's waiting time."""
    needs_exits: bool = False
    """Whether it reads the exit detectors on outgoing lanes."""

    @abstractmethod
    def space(self, view: SignalView) -> spaces.Box:
        """The observation space for this intersection."""

    @abstractmethod
    def __call__(self, view: SignalView, readings: Readings) -> np.ndarray:
        """The observation at this decision step."""

    def observe_all(self, views: Sequence[SignalView], readings: Readings) -> np.ndarray:
        """Every intersection's observation, concatenated in ``views`` order."""
        return np.concatenate([self(v, readings) for v in views])

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class QueueObservation(ObservationFunction):
    """Phase one-hot, time in phase, and per incoming lane: queue, occupancy, speed.

    Queue is halting vehicles over what fits on the detector; occupancy is in
    [0, 1]; speed is the mean speed over the speed limit (1 on an empty lane);
    time in phase is over the maximum green.
    """

    def space(self, view: SignalView) -> spaces.Box:
        """Box of ``phases + 1 + 3 * lanes`` values in [0, 1]."""
        return spaces.Box(0.0, 1.0, shape=(self.size(view),), dtype=np.float32)

    @staticmethod
    def size(view: SignalView) -> int:
        """Values of one intersection's queue features: ``phases + 1 + 3 * lanes``."""
        return view.layout.num_phases + 1 + 3 * len(view.entry)

    def __call__(self, view: SignalView, readings: Readings) -> np.ndarray:
        """The observation vector."""
        return self.observe_all([view], readings)

    def observe_all(self, views: Sequence[SignalView], readings: Readings) -> np.ndarray:
        """All intersections at once: one gather from a pool of every feature."""
        n_det = len(readings.queue)
        if not _same_views(getattr(self, "_views", None), views, n_det):
            self._views, self._plan = (n_det, tuple(views)), self._gather_plan(views, n_det)
        gather, phase_offsets, capacity, limit = self._plan
        phases = np.zeros(int(phase_offsets[-1]))
        phases[phase_offsets[:-1] + [v.green for v in views]] = 1.0
        times = [v.time_in_phase / v.layout.max_green for v in views]
        speed = np.fmin(readings.speed / limit, 1.0)  # fmin turns an empty lane's NaN into 1
        pool = np.concatenate(
            (phases, times, readings.queue / capacity, readings.occupancy / 100.0, speed)
        )
        return np.clip(pool[gather], 0.0, 1.0).astype(np.float32)

    @staticmethod
    def _gather_plan(
        views: Sequence[SignalView], n_det: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Indices that pick each view's features, in order, out of the feature pool."""
        phase_offsets = np.cumsum([0] + [v.layout.num_phases for v in views])
        n_phase, n_views = int(phase_offsets[-1]), len(views)
        capacity, limit = np.ones(n_det), np.ones(n_det)
        for v in views:
            capacity[v.entry], limit[v.entry] = v.entry_capacity, v.entry_speed_limit
        queue0 = n_phase + n_views
        gather: list[int] = []
        for k, v in enumerate(views):
            gather.extend(range(int(phase_offsets[k]), int(phase_offsets[k + 1])))
            gather.append(n_phase + k)
            for block in range(3):
                gather.extend(queue0 + block * n_det + v.entry)
        return np.array(gather), phase_offsets, capacity, limit


class QueueExitObservation(QueueObservation):
    """:class:`QueueObservation`, then how full the lanes each green phase feeds are.

    Per green phase, the mean over the movements it serves of the outgoing lane's
    density (vehicles on its exit detector over what fits there), in [0, 1]: a queue
    that waits on green because the road beyond is full (spillback) looks, in the queue
    features alone, like one about to leave; this tells the two apart.
    """

    needs_exits = True

    def space(self, view: SignalView) -> spaces.Box:
        """Box of ``2 * phases + 1 + 3 * lanes`` values in [0, 1]."""
        size = QueueObservation.size(view) + view.layout.num_phases
        return spaces.Box(0.0, 1.0, shape=(size,), dtype=np.float32)

    def observe_all(self, views: Sequence[SignalView], readings: Readings) -> np.ndarray:
        """Each intersection's queue features followed by its phases' exit densities."""
        queue = super().observe_all(views, readings)
        parts, start = [], 0
        for v in views:
            end = start + QueueObservation.size(v)
            density = readings.count[v.exit] / v.exit_capacity
            outlet = [np.mean([density[o] for _, o in moves]) if moves else 0.0
                      for moves in v.layout.movements]
            parts += [queue[start:end], np.clip(outlet, 0.0, 1.0).astype(np.float32)]
            start = end
        return np.concatenate(parts)


class PressureObservation(ObservationFunction):
    """Phase one-hot and each green phase's pressure (Varaiya's max-pressure quantity).

    A phase's pressure is the mean, over the movements it serves, of the
    incoming lane's density minus the outgoing lane's density (vehicles over
    what fits on the detector), in [-1, 1].
    """

    needs_exits = True

    def space(self, view: SignalView) -> spaces.Box:
        """Box of ``2 * phases`` values in [-1, 1]."""
        size = 2 * view.layout.num_phases
        return spaces.Box(-1.0, 1.0, shape=(size,), dtype=np.float32)

    def __call__(self, view: SignalView, readings: Readings) -> np.ndarray:
        """The observation vector."""
        density_in = readings.count[view.entry] / view.entry_capacity
        density_out = readings.count[view.exit] / view.exit_capacity
        pressure = [
            np.mean([density_in[i] - density_out[o] for i, o in moves]) if moves else 0.0
            for moves in view.layout.movements
        ]
        return np.clip(
            np.concatenate((view.phase_one_hot(), pressure)), -1.0, 1.0
        ).astype(np.float32)


OBSERVATIONS: dict[str, type[ObservationFunction]] = {
    "queue": QueueObservation,
    "queue-exit": QueueExitObservation,
    "pressure": PressureObservation,
}
