"""Traffic that drifts: a long horizon repeating a scenario's demand, with changes over time.

A drift is a small spec, ``KIND=VALUE@WHEN`` items separated by commas, over a horizon
of ``hours``. Times are measured from the scenario's begin, in ``90s``, ``15m``, ``2h``,
``1h30m`` or bare seconds; ``@T`` is a step at T, ``@T1-T2`` a window (a linear ramp for
``growth``, ``od-shift`` and ``sensor-aging``, then held; the span of a ``closure`` or a
``surge``, which without an end last to the horizon):

- ``growth=+30%@2h`` (or ``-20%``): the demand's Poisson means times 1.3 from 2 h on;
- ``od-shift=20%@2h``: a fifth of the trips departing from then on get another origin and
  destination, drawn among the demand's own entry and exit edges (:mod:`networks.drift_demand`);
- ``closure=EDGE@3h-4h``: the edge closed to all vehicles, SUMO rerouting around it
  (:mod:`networks.drift_net`);
- ``surge=EDGE+600@5h-5h30m``: 600 extra vehicles an hour departing from EDGE;
- ``sensor-aging=dropout:0.2@2h-6h`` (faults joined by ``+``: ``dropout:0.2+noise:0.1``): the
  sensor model's fault rates rising linearly from the configured ones to these.

The long horizon repeats the base scenario's demand period after period
(:mod:`networks.drift_demand`). The empty spec is the stationary drift: the base demand
repeated, no change.

Usage::

    drift = Drift.parse("growth=+30%@2h,closure=EDGE@3h-4h", hours=8).check(base)
    long = drift.scenario(base)
    options = SimulationOptions(drift=drift)      # TrafficSimulation(long, options)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    PrivateAttr,
    model_serializer,
    model_validator,
)

from networks.errors import NetworkError
from networks.scenario import MAX_TIME_S, Scenario

__all__ = ["AGING_FAULTS", "KINDS", "Change", "Drift", "DriftError", "duration", "seconds"]

KINDS = ("growth", "od-shift", "closure", "surge", "sensor-aging")
"""The kinds of change a drift spec names."""
AGING_FAULTS = {"noise": (0.0, 10.0, True), "dropout": (0.0, 1.0, False),
                "stuck": (0.0, 1.0, False), "failure": (0.0, 1.0, False)}
"""The sensor faults that age, with their bounds (low, high, high included): those of
:class:`simulator.faults.FaultConfig`, which this package cannot import."""
MAX_GROWTH = 100.0
"""Largest demand multiplier a growth may reach (that of ``--demand scale``)."""
_GRAMMAR = ("give KIND=VALUE@WHEN items separated by commas, e.g. 'growth=+30%@2h,"
            "closure=EDGE@3h-4h'; kinds: " + ", ".join(KINDS))
_TIME = re.compile(r"^(?:(\d+(?:\.\d*)?)h)?(?:(\d+(?:\.\d*)?)m)?(?:(\d+(?:\.\d*)?)s)?$")
_PERCENT = re.compile(r"^([+-]?\d+(?:\.\d*)?)%$")


class DriftError(NetworkError):
    """A drift spec that cannot be used; the message is one line naming what is wrong."""


def seconds(text: str) -> float:
    """``90s``, ``15m``, ``2h``, ``1h30m`` or a bare number, in seconds.

    Raises:
        DriftError: Text that is no such time.
    """
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        match = _TIME.match(text)
        if not text or match is None or not any(match.groups()):
            raise DriftError(f"drift: time {text!r} is not like 90s, 15m, 2h, 1h30m or a "
                             "number of seconds") from None
        h, m, s = (float(g) if g else 0.0 for g in match.groups())
        value = h * 3600 + m * 60 + s
    if not math.isfinite(value) or value < 0:
        raise DriftError(f"drift: time {text!r} must be a finite number of seconds >= 0")
    return value


def duration(value: float) -> str:
    """Seconds as a drift spec writes them: ``2h``, ``1h30m``, ``90s`` -> ``1m30s``."""
    whole = round(value)
    if abs(value - whole) > 1e-9:
        return f"{value:g}s"
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    text = "".join(f"{n}{u}" for n, u in ((h, "h"), (m, "m"), (s, "s")) if n)
    return text or "0"


@dataclass(frozen=True)
class Change:
    """One change of a drift, with its times in seconds after the scenario's begin."""

    kind: Literal["growth", "od-shift", "closure", "surge", "sensor-aging"]
    start: float
    """When it starts."""
    end: float | None
    """End of its window (ramp or span); ``None``: a step (growth, od-shift, aging) or
    lasting to the horizon (closure, surge)."""
    amount: float = 0.0
    """growth: the relative change (0.3 for +30%); od-shift: the share; surge: vehicles
    per hour."""
    edge: str = ""
    """The edge of a closure or a surge."""
    rates: tuple[tuple[str, float], ...] = ()
    """sensor-aging: the fault rates reached."""

    @property
    def value(self) -> str:
        """The part between ``=`` and ``@``, canonical."""
        if self.kind == "growth":
            return f"{self.amount * 100:+g}%"
        if self.kind == "od-shift":
            return f"{self.amount * 100:g}%"
        if self.kind == "surge":
            return f"{self.edge}+{self.amount:g}"
        if self.kind == "closure":
            return self.edge
        return "+".join(f"{name}:{rate:g}" for name, rate in self.rates)

    def __str__(self) -> str:
        when = duration(self.start) + ("" if self.end is None else f"-{duration(self.end)}")
        return f"{self.kind}={self.value}@{when}"

    def level(self, t: float) -> float:
        """How far the change has gone at ``t``: 0 before, 1 once reached (a ramp between).

        A closure or surge is 1 within its span and 0 outside.
        """
        if t < self.start:
            return 0.0
        if self.kind in ("closure", "surge"):
            return 1.0 if self.end is None or t < self.end else 0.0
        if self.end is None or t >= self.end:
            return 1.0
        return (t - self.start) / (self.end - self.start)


def _amount(kind: str, value: str, item: str) -> dict[str, Any]:
    """The parsed value of one item: amount, edge and rates."""
    if kind in ("growth", "od-shift"):
        match = _PERCENT.match(value)
        if match is None:
            example = "+30%" if kind == "growth" else "20%"
            raise DriftError(f"drift: {item!r}: {kind} takes a percentage such as {example}, "
                             f"got {value!r}")
        share = float(match.group(1)) / 100
        if kind == "growth" and not 0 < 1 + share <= MAX_GROWTH:
            raise DriftError(f"drift: {item!r}: growth must leave a demand above 0 and at most "
                             f"{MAX_GROWTH:g} times the base (more than -100%)")
        if kind == "od-shift" and not 0 < share <= 1:
            raise DriftError(f"drift: {item!r}: od-shift must be a share above 0% and at most "
                             "100%")
        return {"amount": share}
    if kind == "closure":
        if not value:
            raise DriftError(f"drift: {item!r}: closure takes an edge id, e.g. closure=EDGE@2h")
        return {"edge": value}
    if kind == "surge":
        edge, plus, rate = value.rpartition("+")
        try:
            number = float(rate)
        except ValueError:
            number = math.nan
        if not plus or not edge or not math.isfinite(number) or number <= 0:
            raise DriftError(f"drift: {item!r}: surge takes EDGE+VEHICLES_PER_HOUR with a "
                             f"number above 0, e.g. surge=EDGE+600@5h-5h30m")
        return {"edge": edge, "amount": number}
    return {"rates": _rates(value, item)}


def _rates(value: str, item: str) -> tuple[tuple[str, float], ...]:
    rates: dict[str, float] = {}
    for part in value.split("+"):
        name, colon, number = (s.strip() for s in part.partition(":"))
        if name not in AGING_FAULTS:
            raise DriftError(f"drift: {item!r}: sensor-aging takes FAULT:RATE joined by +, "
                             f"faults: {', '.join(AGING_FAULTS)}; got {part!r}")
        low, high, closed = AGING_FAULTS[name]
        try:
            rate = float(number) if colon else math.nan
        except ValueError:
            rate = math.nan
        if not (low <= rate <= high if closed else low <= rate < high) or name in rates:
            bound = f"[{low:g}, {high:g}{']' if closed else ')'}"
            raise DriftError(f"drift: {item!r}: {name} must be given once, as a rate in "
                             f"{bound}, got {number!r}")
        rates[name] = rate
    return tuple(rates.items())


def _change(item: str, horizon_s: float) -> Change:
    head, at, when = item.rpartition("@")
    kind, eq, value = (s.strip() for s in head.partition("="))
    if not at or not eq:
        raise DriftError(f"drift: {item!r} is not KIND=VALUE@WHEN; {_GRAMMAR}")
    if kind not in KINDS:
        raise DriftError(f"drift: unknown kind {kind!r} in {item!r}; kinds: {', '.join(KINDS)}")
    first, dash, last = when.strip().partition("-")
    try:
        start = seconds(first)
        end = seconds(last) if dash else None
    except DriftError as err:
        raise DriftError(f"drift: {item!r}: {str(err).removeprefix('drift: ')}") from None
    hours = f"the horizon of {horizon_s / 3600:g} h"
    if start >= horizon_s:
        raise DriftError(f"drift: {item!r} starts at {duration(start)}, not within {hours}")
    if end is not None and end <= start:
        raise DriftError(f"drift: {item!r} ends at {duration(end)}, not after its start "
                         f"{duration(start)}")
    if end is not None and end > horizon_s:
        raise DriftError(f"drift: {item!r} ends at {duration(end)}, after {hours}")
    return Change(kind, start, end, **_amount(kind, value.strip(), item))  # type: ignore[arg-type]


def _changes(text: str, hours: float) -> tuple[Change, ...]:
    items = [part.strip() for part in text.split(",")]
    return tuple(_change(item, hours * 3600) for item in items if item)


def _canonical(text: str, hours: Any) -> str:
    """The canonical text of a spec over ``hours``, both checked."""
    if isinstance(hours, bool) or not isinstance(hours, int | float) \
            or not math.isfinite(hours) or hours <= 0 or hours * 3600 > MAX_TIME_S:
        raise DriftError(f"drift: hours must be a number above 0 and at most "
                         f"{MAX_TIME_S // 3600} (a year), got {hours!r}")
    if round(hours * 3600) < 1:
        raise DriftError(f"drift: hours must make at least one second, got {hours!r}")
    return ",".join(str(c) for c in _changes(text, float(hours)))


class Drift(BaseModel):
    """A drift spec over a horizon; see the module. Frozen, hashable and picklable.

    Build it with :meth:`parse`, then bind it to its base scenario with :meth:`check`,
    which the simulator needs (the period the demand repeats is the base's horizon).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str = ""
    """The spec, canonical (``growth=+30%@2h,closure=EDGE@3h-4h``); empty: stationary."""
    hours: float
    """The long horizon in hours (fractions allowed: 0.5 is half an hour)."""
    period_s: int | None = None
    """The base scenario's horizon in seconds, which the demand repeats; set by :meth:`check`."""
    _changes: tuple[Change, ...] = PrivateAttr(default=())

    @model_validator(mode="before")
    @classmethod
    def _canonical(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "hours" not in data:
            return data
        return {**data, "text": _canonical(str(data.get("text", "")), data["hours"])}

    def model_post_init(self, context: Any, /) -> None:
        """Keep the parsed changes beside the canonical text."""
        self._changes = _changes(self.text, self.hours)

    @model_serializer(mode="wrap")
    def _without_none(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict) and data.get("period_s") is None:
            data.pop("period_s", None)  # TOML has no null
        return data

    @classmethod
    def parse(cls, text: str, hours: float = 8) -> Drift:
        """The drift of ``text`` over ``hours`` hours.

        Raises:
            DriftError: An unknown kind, a malformed amount or time, a time outside the
                horizon or an end before a start, in one line.
        """
        return cls(text=_canonical(str(text), hours), hours=hours)

    def __str__(self) -> str:
        return self.text or "stationary"

    @property
    def changes(self) -> tuple[Change, ...]:
        """The changes, in the order the spec gives them."""
        return self._changes

    @property
    def horizon_s(self) -> int:
        """The long horizon in seconds."""
        return round(self.hours * 3600)

    def of(self, kind: str) -> tuple[Change, ...]:
        """The changes of one kind."""
        return tuple(c for c in self._changes if c.kind == kind)

    @property
    def aging(self) -> tuple[tuple[float, float, dict[str, float]], ...]:
        """The sensor-aging windows as the sensor model takes them: (start, end, rates)."""
        return tuple((c.start, c.start if c.end is None else c.end, dict(c.rates))
                     for c in self.of("sensor-aging"))

    def growth(self, t: float) -> float:
        """The demand's multiplier at ``t`` seconds after begin (1 without growth)."""
        factor = 1.0
        for change in self.of("growth"):
            factor *= 1 + change.amount * change.level(t)
        return factor

    def shifted_share(self, t: float) -> float:
        """The share of trips departing at ``t`` whose origin and destination are moved."""
        kept = 1.0
        for change in self.of("od-shift"):
            kept *= 1 - change.amount * change.level(t)
        return 1 - kept

    def change_points(self) -> list[tuple[float, str]]:
        """When something changes, in seconds after begin, with a label, sorted by time.

        A change's start, and the end of a closure (``lifted``) or a surge (``ends``).
        """
        points = [(c.start, f"{c.kind} {c.value}") for c in self._changes]
        points += [(c.end, f"{c.kind} {c.value} {'lifted' if c.kind == 'closure' else 'ends'}")
                   for c in self._changes if c.kind in ("closure", "surge") and c.end is not None]
        return sorted(points, key=lambda point: point[0])

    def at(self, t_s: float) -> Drift:
        """The conditions at ``t_s`` as a stationary drift of one base period.

        Each change active at ``t_s`` applies from the start: a growth or od-shift at
        its level then, a closure or surge for the whole period, aged sensors at their
        rates then (for a ramp cut midway, the configured rates are taken as 0).

        Raises:
            DriftError: The drift is not bound to a base (:meth:`check`).
        """
        period = self._period()
        steps: list[Change] = []
        for change in self._changes:
            level = change.level(t_s)
            if level <= 0:
                continue
            if change.kind in ("growth", "od-shift"):
                steps.append(replace(change, start=0.0, end=None, amount=change.amount * level))
            elif change.kind == "sensor-aging":
                rates = tuple((n, r * level) for n, r in change.rates)
                steps.append(replace(change, start=0.0, end=None, rates=rates))
            else:
                steps.append(replace(change, start=0.0, end=None))
        return Drift(text=",".join(str(c) for c in steps), hours=period / 3600, period_s=period)

    def _period(self) -> int:
        if self.period_s is None:
            raise DriftError("drift: not bound to its base scenario; call drift.check(base) "
                             "and use the drift it returns")
        return self.period_s

    def check(self, base: Scenario) -> Drift:
        """This drift bound to ``base``, checked against it: edges exist, and so on.

        Returns:
            The drift with :attr:`period_s` = ``base``'s horizon, for the simulator.

        Raises:
            DriftError: An edge the net does not have (named, with some that it has), a
                closure where traffic enters the net, a surge with nowhere to go, or a
                drift bound to another base's period.
        """
        from networks.drift_demand import check_edges

        if self.period_s is not None and self.period_s != base.horizon_s:
            raise DriftError(f"drift: bound to a base of {self.period_s} s, not to "
                             f"{base.name}'s {base.horizon_s} s")
        check_edges(self, base)
        return self if self.period_s is not None else \
            self.model_copy(update={"period_s": base.horizon_s})

    def scenario(self, base: Scenario) -> Scenario:
        """``base`` over the long horizon: same net, route files, name and begin.

        Raises:
            DriftError: As :meth:`check`; or the horizon would end after a year.
        """
        self.check(base)
        end = base.begin + self.horizon_s
        if end > MAX_TIME_S:
            raise DriftError(f"drift: {self.hours:g} h from {base.begin} s ends after a year")
        return Scenario(base.name, base.net_file, base.route_files, base.begin, end,
                        base.description)

    def base_of(self, long: Scenario) -> Scenario:
        """The base scenario of a long one made by :meth:`scenario` (bound drifts only)."""
        return Scenario(long.name, long.net_file, long.route_files, long.begin,
                        long.begin + self._period(), long.description)

    def route_files(self, long: Scenario, seed: int, demand: Any,
                    cache_dir: Path | None = None) -> tuple[Path, ...]:
        """The route file of an episode of ``long`` with ``seed`` (drawn and cached once).

        ``demand`` is the options' :class:`networks.demand.Demand`.
        """
        from networks.drift_demand import route_file

        return (route_file(self, long, seed, demand, cache_dir),)

    def additional(self, long: Scenario, folder: Path) -> Path | None:
        """The rerouter additional of the closures, written in ``folder`` (None: none)."""
        from networks.drift_net import Closing, road_graph, write_rerouter

        closures = self.of("closure")
        if not closures:
            return None
        closings = [Closing(c.edge, long.begin + c.start,
                            long.begin + (self.horizon_s if c.end is None else c.end))
                    for c in closures]
        return write_rerouter(folder / "closures.add.xml", road_graph(long.net_file), closings)
