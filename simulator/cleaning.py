"""Cleaning sensor readings before the policy: imputing what is missing.

A missing reading (dropout, latency, a dead sensor: see :mod:`simulator.faults`)
is NaN in every field of its detector. Cleaning fills it in, as a
:class:`~simulator.sensors.SensorModel` that wraps the faulty one
(faults, then cleaning):

- ``last``: each detector repeats its last good reading; before it has sent
  one, it reads as an empty detector (zero vehicles).
- ``zero-flag``: a missing detector reads as an empty one, and
  :attr:`CleanReadings.missing` flags it; :class:`MissingFlags` appends the
  flags of an intersection's detectors to its observation, so a policy can
  learn to discount the zeros.
- ``none``: readings reach the controller as the sensors deliver them.

Normalising observations by running statistics belongs to a policy (it is
stored with its weights): see :mod:`agents.normalize`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from gymnasium import spaces

from simulator.faults import FIELDS, FaultConfig, FaultySensors
from simulator.observations import ObservationFunction, _same_views
from simulator.sensors import Detectors, Readings, SensorModel
from simulator.view import SignalView

CLEANINGS = ("none", "last", "zero-flag")
"""Names of the cleaning methods, as ``--cleaning`` takes them."""


class CleaningError(ValueError):
    """An unknown cleaning method; the message is one line."""


@dataclass(frozen=True)
class CleanReadings(Readings):
    """Readings after imputation, with the detectors whose reading was missing flagged."""

    missing: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """Per detector, True where the reading was missing and has been filled in."""


def missing_of(readings: Readings) -> np.ndarray:
    """Which detectors' readings are missing: flagged by cleaning, else NaN counts."""
    if isinstance(readings, CleanReadings):
        return readings.missing
    return np.isnan(readings.count)


def _empty_table(detectors: Detectors) -> np.ndarray:
    """What an empty detector reads, in the rows of :data:`simulator.faults.FIELDS`.

    Zero vehicles, no mean speed (NaN, as SUMO's detectors report an empty lane);
    exit detectors report only a count.
    """
    n = len(detectors.ids)
    entry = detectors.is_entry
    zero_or_nan = np.where(entry, 0.0, np.nan)
    return np.stack([zero_or_nan, zero_or_nan, np.full(n, np.nan), np.zeros(n), np.zeros(n)])


class Imputer(ABC):
    """Fills in missing readings, one detector (every field) at a time."""

    name: str

    @abstractmethod
    def reset(self, detectors: Detectors) -> None:
        """Start an episode on these detectors."""

    @abstractmethod
    def __call__(self, table: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """The table (fields by detectors) with the ``missing`` columns filled in."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LastValue(Imputer):
    """Carry each detector's last good reading forward; an empty detector before the first."""

    name = "last"

    def __init__(self) -> None:
        self._last = np.zeros((len(FIELDS), 0))

    def reset(self, detectors: Detectors) -> None:
        """No good reading yet: every detector starts out empty."""
        self._last = _empty_table(detectors)

    def __call__(self, table: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """Missing columns from the last good reading; good columns become the last."""
        out = table.copy()
        out[:, missing] = self._last[:, missing]
        self._last = out
        return out


class ZeroFill(Imputer):
    """A missing detector reads as an empty one (the flags say which)."""

    name = "zero-flag"

    def __init__(self) -> None:
        self._empty = np.zeros((len(FIELDS), 0))

    def reset(self, detectors: Detectors) -> None:
        """Remember what these detectors read when empty."""
        self._empty = _empty_table(detectors)

    def __call__(self, table: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """Missing columns from the empty reading."""
        out = table.copy()
        out[:, missing] = self._empty[:, missing]
        return out


IMPUTERS: dict[str, type[Imputer]] = {"last": LastValue, "zero-flag": ZeroFill}


class CleanedSensors(SensorModel):
    """Faults, then cleaning: imputes what another sensor model leaves missing.

    Args:
        inner: the sensor model whose readings are cleaned (default: exact).
        imputation: ``last`` or ``zero-flag``.
    """

    def __init__(self, inner: SensorModel | None = None, imputation: str = "last") -> None:
        if imputation not in IMPUTERS:
            raise CleaningError(
                f"unknown imputation {imputation!r}; choose from {', '.join(IMPUTERS)}"
            )
        self.inner = inner or SensorModel()
        self.imputer = IMPUTERS[imputation]()

    def reset(self, detectors: Detectors, seed: int | None) -> None:
        """Start the inner model and the imputation afresh."""
        self.inner.reset(detectors, seed)
        self.imputer.reset(detectors)

    def observe(self, readings: Readings) -> CleanReadings:
        """The inner model's readings, with missing detectors filled in and flagged."""
        seen = self.inner.observe(readings)
        missing = np.isnan(seen.count)  # every detector reports a count, even an empty one
        table = self.imputer(np.stack([getattr(seen, name) for name in FIELDS]), missing)
        arrays = dict(zip(FIELDS, table, strict=True))
        return CleanReadings(time=seen.time, **arrays, missing=missing)

    def __repr__(self) -> str:
        return f"CleanedSensors({self.inner!r}, {self.imputer.name!r})"


class MissingFlags(ObservationFunction):
    """Another observation with, per incoming (and, if it reads them, outgoing) lane, a flag.

    The flag is 1 where the lane's detector reading was missing (see
    :func:`missing_of`). NaN left in the inner observation (no cleaning) is
    read as 0, which is what ``zero-flag`` cleaning gives.

    Args:
        inner: the observation the flags are appended to.
    """

    def __init__(self, inner: ObservationFunction) -> None:
        self.inner = inner
        self.needs_first_wait = inner.needs_first_wait
        self.needs_exits = inner.needs_exits

    def _lanes(self, view: SignalView) -> np.ndarray:
        return np.concatenate((view.entry, view.exit)) if self.needs_exits else view.entry

    def space(self, view: SignalView) -> spaces.Box:
        """The inner space followed by one flag in [0, 1] per lane."""
        box = self.inner.space(view)
        flags = len(self._lanes(view))
        return spaces.Box(
            np.concatenate((box.low, np.zeros(flags, np.float32))),
            np.concatenate((box.high, np.ones(flags, np.float32))),
            dtype=np.float32,
        )

    def __call__(self, view: SignalView, readings: Readings) -> np.ndarray:
        """The observation vector."""
        return self.observe_all([view], readings)

    def observe_all(self, views: Sequence[SignalView], readings: Readings) -> np.ndarray:
        """Each intersection's inner observation followed by its flags."""
        n_det = len(readings.count)
        if not _same_views(getattr(self, "_views", None), views, n_det):
            sizes = [self.inner.space(v).shape[0] for v in views]
            self._views, self._plan = (n_det, tuple(views)), (
                np.cumsum(sizes)[:-1], [self._lanes(v) for v in views]
            )
        splits, lanes = self._plan
        inner = np.split(np.nan_to_num(self.inner.observe_all(views, readings), nan=0.0), splits)
        missing = missing_of(readings).astype(np.float32)
        parts = []
        for obs, mine in zip(inner, lanes, strict=True):
            parts += [obs, missing[mine]]
        return np.concatenate(parts).astype(np.float32)

    def __repr__(self) -> str:
        return f"MissingFlags({self.inner!r})"


def sensor_model(faults: FaultConfig | str = "", cleaning: str = "none") -> SensorModel:
    """The sensor model for a fault configuration and a cleaning method.

    Raises:
        FaultConfigError: the faults cannot be read.
        CleaningError: an unknown cleaning method.
    """
    if cleaning not in CLEANINGS:
        raise CleaningError(f"unknown cleaning {cleaning!r}; choose from {', '.join(CLEANINGS)}")
    config = FaultConfig.parse(faults) if isinstance(faults, str) else faults
    model = FaultySensors(config) if config.active else SensorModel()
    return model if cleaning == "none" else CleanedSensors(model, cleaning)
