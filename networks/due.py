"""Whether a scenario's horizon holds any of its demand, decided before anything runs.

A run in which no vehicle is due (the city networks begin their traffic hours after 0,
and a horizon of ``--begin 0 --end 600`` misses all of it) would measure nothing and
report a delay of 0 as if every car flowed. Every simulation takes its route files from
:meth:`networks.demand.Demand.route_files`, which calls :func:`check_due` first; the
commands call it once more while they check their options, before anything starts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from networks.demand import _TIMED, NoVehiclesError, _number, _top_level, profile
from networks.errors import NetworkError
from networks.scenario import Scenario

__all__ = ["NoVehiclesError", "Span", "check_due", "demand_span", "expected"]


_CACHE: dict[tuple[object, ...], float] = {}
"""Vehicles expected in a horizon, by the route files' paths, sizes and times and the horizon."""


def expected(scenario: Scenario) -> float:
    """Vehicles expected to depart within the horizon, read once per version of the files."""
    stamps = []
    for path in scenario.route_files:
        try:
            stat = Path(path).stat()
        except OSError:
            raise NetworkError(f"route file not found: {path}") from None
        stamps.append((str(path), stat.st_size, stat.st_mtime_ns))
    key = (tuple(stamps), scenario.begin, scenario.end)
    if key not in _CACHE:
        _CACHE[key] = float(profile(scenario, scenario.horizon_s).means.sum())
    return _CACHE[key]


@dataclass(frozen=True)
class Span:
    """When a demand's vehicles depart, whatever the horizon."""

    first: float | None
    """The earliest departure (or flow begin) in seconds; None: no vehicle at all."""
    last: float | None
    """The latest departure (or flow end) in seconds."""
    unscheduled: int = 0
    """Vehicles and trips whose departure is no time (``triggered``, or not valid): SUMO
    decides whether and when they run, or names what is wrong with them."""


def demand_span(route_files: Iterable[Path]) -> Span:
    """The time span of the vehicles, trips and flows that route files list."""
    times: list[float] = []
    unscheduled = 0
    for path in route_files:
        for elem in _top_level(Path(path)):
            if elem.tag == "flow":
                begin = _number(elem.get("begin", "0"))
                times += [t for t in (begin, _number(elem.get("end"))) if t is not None]
            elif elem.tag in _TIMED:
                when = _number(elem.get("depart"))
                times += [] if when is None else [when]
                unscheduled += when is None
    return Span(min(times, default=None), max(times, default=None), unscheduled)


def check_due(scenario: Scenario) -> float:
    """The vehicles expected in the scenario's horizon, refusing a horizon with none.

    Raises:
        NoVehiclesError: No vehicle departs within the horizon (nor any whose departure
            is no time); the one line names the horizon and when the demand departs.
        NetworkError: A route file that is missing, malformed or not a route file.
    """
    due = expected(scenario)
    if due > 0:
        return due
    span = demand_span(scenario.route_files)
    if span.unscheduled:
        return due
    files = ", ".join(Path(p).name for p in scenario.route_files)
    where = (f"its demand ({files}) departs from {span.first:g} to {span.last:g} s: choose "
             "a begin and end within that span" if span.first is not None
             else f"its route files ({files}) hold no vehicle, trip or flow")
    raise NoVehiclesError(f"no vehicle is due between {scenario.begin} and {scenario.end} s "
                          f"on {scenario.name}: {where}")
