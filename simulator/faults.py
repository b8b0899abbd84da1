"""Faulty roadside sensors: noise, dropout, stuck-at, latency and whole-sensor failure.

A :class:`FaultConfig` says how often each fault strikes; :class:`FaultySensors`
is the :class:`~simulator.sensors.SensorModel` that applies it to every reading
the controller receives. A sensor is one detector: a fault hits all of its
fields (queue, occupancy, speed, count, first vehicle's wait) at once. A missing
reading is NaN in every field.

The faults apply, per decision step, in the order a reading travels:

1. **noise**: the device measures with Gaussian error whose standard deviation
   is ``noise`` times the true value (``noise=0.1``: 10% of the reading, as
   detector accuracy is quoted), clipped to what the field can hold (no
   negative counts, occupancy at most 100%). An empty lane reads empty.
2. **stuck**: at each step a working sensor sticks with probability ``stuck``
   and then repeats the last value it sent for ``stuck_steps`` steps.
3. **latency**: every reading arrives ``latency`` decision steps late; before
   the first one arrives the controller has none (missing).
4. **dropout**: each sensor's reading is lost with probability ``dropout``
   at each step (missing).
5. **failure**: a share ``failure`` of the sensors, drawn at the start of the
   episode, is dead for the whole episode (missing throughout).

Faults change only what the controller sees; the simulation, the KPIs and the
training reward are measured on the true readings.

Sensors age (a drift's ``sensor-aging``, :mod:`networks.drift`): given ``aging`` windows
``(start, end, rates)`` in seconds after the episode's first reading, the rates of
noise, dropout, stuck and failure rise linearly from the configured ones to ``rates``
within each window (a step where ``end == start``) and stay there. Failure grows over the
same random order of sensors that the episode's first draw made, so a sensor dead once
stays dead. Without aging the draws are the same, in the same order, as they always were.

Randomness comes from the episode's seed (and :attr:`FaultConfig.seed`), so a
run is reproducible and every controller run with the same seed meets the
same faults on the same sensors: entry detectors (on the incoming lanes, which
every controller has) and exit detectors (which only some place) draw from
separate streams.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simulator.sensors import Detectors, Readings, SensorModel

FIELDS = ("queue", "occupancy", "speed", "count", "first_wait")
"""The reading fields a fault acts on, in the rows of the internal table."""

_UPPER = np.array([np.inf, 100.0, np.inf, np.inf, np.inf])[:, None]
"""Largest value of each field (occupancy is a percentage)."""
MAX_STEPS = 10_000
"""Most decision steps a fault may last or delay readings by (14 h at 5 s steps)."""


class FaultConfigError(ValueError):
    """A fault configuration that cannot be used; the message is one line naming the field."""


class FaultConfig(BaseModel):
    """How the roadside sensors fail. Every field at its default means no fault.

    Raises:
        FaultConfigError: an unknown field, or a value of the wrong type or out of range.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    noise: float = Field(default=0.0, ge=0, le=10)
    """Standard deviation of the Gaussian measurement error, as a fraction of the true value
    (0 to 10: beyond ten times the reading there is nothing left to measure)."""
    dropout: float = Field(default=0.0, ge=0, lt=1)
    """Probability that a sensor's reading is lost at a decision step, in [0, 1)."""
    stuck: float = Field(default=0.0, ge=0, lt=1)
    """Probability per decision step that a working sensor sticks at its last value, in [0, 1)."""
    stuck_steps: int = Field(default=60, ge=1, le=MAX_STEPS)
    """Decision steps a stuck sensor repeats its last value (60: five minutes at 5 s steps)."""
    latency: int = Field(default=0, ge=0, le=MAX_STEPS)
    """Decision steps by which every reading arrives late."""
    failure: float = Field(default=0.0, ge=0, lt=1)
    """Share of the sensors dead for the whole episode, in [0, 1)."""
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    """Added to the episode's seed for the fault draws: other faults on the same traffic."""

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise FaultConfigError(_first_error(err)) from None

    @property
    def active(self) -> bool:
        """Whether any fault is switched on."""
        return bool(self.noise or self.dropout or self.stuck or self.latency or self.failure)

    def replace(self, **changes: Any) -> FaultConfig:
        """This configuration with ``changes``, checked like a new one."""
        return type(self)(**{**self.model_dump(), **changes})

    @classmethod
    def parse(cls, text: str) -> FaultConfig:
        """Read ``"dropout=0.2,noise=0.1"``: comma-separated ``KIND=VALUE``; empty for none.

        Raises:
            FaultConfigError: an unknown kind, a malformed item or a value out of range.
        """
        values: dict[str, float | int] = {}
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            kind, sep, raw = (s.strip() for s in item.partition("="))
            if not sep or not kind or not raw:
                raise FaultConfigError(f"fault {item!r} is not KIND=VALUE, e.g. dropout=0.2")
            if kind not in cls.model_fields:
                raise FaultConfigError(
                    f"unknown fault kind {kind!r}; known: {', '.join(cls.model_fields)}"
                )
            if kind in values:
                raise FaultConfigError(f"fault kind {kind!r} given twice")
            integer = cls.model_fields[kind].annotation is int
            try:
                values[kind] = int(raw) if integer else float(raw)
            except ValueError:
                raise FaultConfigError(
                    f"{kind} must be {allowed(kind, typed=True)}, got {raw!r}") from None
        return cls(**values)

    def __str__(self) -> str:
        """The canonical ``KIND=VALUE,...`` form: fields away from their default, in order."""
        return ",".join(
            f"{name}={getattr(self, name)!r}"
            for name, field in type(self).model_fields.items()
            if getattr(self, name) != field.default
        )


def allowed(name: str, *, typed: bool = False) -> str:
    """The values fault field ``name`` takes, in words: ``an integer >= 0 and <= 10000``.

    A share in [0, 1) reads ``in [0, 1)``, or with ``typed`` ``a number in [0, 1)``.
    """
    field = FaultConfig.model_fields[name]
    bounds = {type(m).__name__: getattr(m, type(m).__name__.lower()) for m in field.metadata}
    kind = "an integer" if field.annotation is int else "a finite number"
    low, high = bounds.get("Ge", bounds.get("Gt")), bounds.get("Le", bounds.get("Lt"))
    if "Lt" in bounds:
        return f"{'a number ' if typed else ''}in [{low:g}, {high:g})"
    return f"{kind} >= {low} and <= {high}"


def _first_error(err: ValidationError) -> str:
    """One line for the first thing wrong with a :class:`FaultConfig`'s values."""
    first = err.errors()[0]
    raised = first.get("ctx", {}).get("error")
    if isinstance(raised, FaultConfigError):
        return str(raised)
    name = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"unknown fault kind {name!r}; known: {', '.join(FaultConfig.model_fields)}"
    if first["type"].endswith("_type") or first["type"] == "int_from_float":
        integer = FaultConfig.model_fields[name].annotation is int
        return f"{name} must be {'an integer' if integer else 'a number'}, got {first['input']!r}"
    return f"{name} must be {allowed(name)}, got {first['input']!r}"


class FaultySensors(SensorModel):
    """Applies a :class:`FaultConfig` to every reading (see the module's text for the order).

    Args:
        config: the faults, or their ``KIND=VALUE,...`` text.
    """

    def __init__(self, config: FaultConfig | str = "",
                 aging: Sequence[tuple[float, float, Mapping[str, float]]] = ()) -> None:
        self.config = FaultConfig.parse(config) if isinstance(config, str) else config
        self.aging = tuple((float(a), float(b), dict(rates)) for a, b, rates in aging)
        self._order: list[np.ndarray] = []
        self._begin: float | None = None
        self._streams: list[tuple[slice, np.random.Generator]] = []
        self._n = 0
        self._stuck_left = np.zeros(0, dtype=np.int64)
        self._last_sent = np.zeros((len(FIELDS), 0))
        self._dead = np.zeros(0, dtype=bool)
        self._pipe: list[np.ndarray] = []

    def reset(self, detectors: Detectors, seed: int | None) -> None:
        """Draw the dead sensors and start the other faults afresh from ``seed``."""
        n = len(detectors.ids)
        n_entry = int(detectors.is_entry.sum())  # entry detectors come first
        base = [self.config.seed, 0 if seed is None else int(seed) + 1]
        self._streams = [
            (block, np.random.default_rng([*base, k]))
            for k, block in enumerate((slice(0, n_entry), slice(n_entry, n)))
        ]
        self._n = n
        self._stuck_left = np.zeros(n, dtype=np.int64)
        self._last_sent = np.full((len(FIELDS), n), np.nan)
        self._pipe = []
        self._dead = np.zeros(n, dtype=bool)
        self._order = []
        self._begin = None
        for block, rng in self._streams:
            size = block.stop - block.start
            order = rng.permutation(size)
            self._order.append(block.start + order)
            self._dead[block.start + order[: round(self.config.failure * size)]] = True

    def rates_at(self, elapsed: float) -> FaultConfig:
        """The fault rates ``elapsed`` seconds after the episode's first reading."""
        cfg = self.config
        for start, end, rates in self.aging:
            if elapsed < start:
                continue
            share = 1.0 if elapsed >= end else (elapsed - start) / (end - start)
            cfg = cfg.replace(**{name: getattr(cfg, name) + (rate - getattr(cfg, name)) * share
                                 for name, rate in rates.items()})
        return cfg

    def _aged(self, time: float) -> FaultConfig:
        if self._begin is None:
            self._begin = time
        cfg = self.rates_at(time - self._begin)
        if cfg.failure != self.config.failure:
            for order in self._order:
                self._dead[order[: round(cfg.failure * len(order))]] = True
        return cfg

    def _draw(self, kind: str, rows: int = 1) -> np.ndarray:
        """One draw per sensor (``rows`` of them), each block from its own stream."""
        out = np.empty((rows, self._n))
        for block, rng in self._streams:
            shape = (rows, block.stop - block.start)
            out[:, block] = rng.standard_normal(shape) if kind == "normal" else rng.random(shape)
        return out

    def observe(self, readings: Readings) -> Readings:
        """The readings as the faulty sensors deliver them."""
        if len(readings.count) != self._n:
            raise ValueError("FaultySensors.reset() was not called for these detectors")
        cfg = self._aged(readings.time) if self.aging else self.config
        table = np.stack([getattr(readings, name) for name in FIELDS]).astype(float)
        if cfg.noise:
            error = self._draw("normal", len(FIELDS)) * cfg.noise
            table = np.clip(table * (1.0 + error), 0.0, _UPPER)  # NaN (no value) stays NaN
        if cfg.stuck:
            sticks = (self._stuck_left == 0) & (self._draw("uniform")[0] < cfg.stuck)
            sticks &= ~np.isnan(self._last_sent[3])  # a sensor sticks at a value it has sent
            self._stuck_left[sticks] = cfg.stuck_steps
            held = self._stuck_left > 0
            table[:, held] = self._last_sent[:, held]
            self._stuck_left[held] -= 1
            self._last_sent = table.copy()
        if cfg.latency:
            self._pipe.append(table)
            table = (
                self._pipe.pop(0)
                if len(self._pipe) > cfg.latency
                else np.full_like(table, np.nan)
            )
        if cfg.dropout:
            table[:, self._draw("uniform")[0] < cfg.dropout] = np.nan
        table[:, self._dead] = np.nan
        return readings.with_values(**dict(zip(FIELDS, table, strict=True)))

    def __repr__(self) -> str:
        aging = f", aging={list(self.aging)!r}" if self.aging else ""
        return f"FaultySensors({str(self.config)!r}{aging})"
