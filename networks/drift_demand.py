"""The demand of a drift's long horizon, written once into the demand cache.

The long horizon is the base scenario's period repeated (the last one cut at the
horizon). Under ``resample`` demand, period ``k`` is a new draw of the base profile
(:func:`networks.demand.profile`, :func:`networks.demand.draw`) seeded from the episode
seed and ``k``, so that every period is its own traffic and none is required to equal the
base scenario's one-hour draw; under ``fixed`` the route files' vehicles are repeated with
their departures shifted by the period (period 0 is the files as they are).

On top of that:

- **growth** multiplies each (group, bin) Poisson mean by the growth at the bin's middle
  (``resample`` only: a fixed list of trips has no mean to scale);
- **od-shift** gives each vehicle departing at ``t``, with probability the share at ``t``,
  another origin and destination, drawn uniformly among the pairs of the demand's own
  origins and destinations that the road graph connects (``resample`` only). A shifted
  vehicle is written as a ``<trip from= to=>`` that SUMO routes at insertion: a vehicle with
  an embedded or named route loses that route, its stops and its numbered departure lane;
- **surge** adds a Poisson stream of trips from the surge's edge over its window, each to
  a destination drawn uniformly among the demand's destinations reachable from there;
- **closure**: SUMO refuses to insert a vehicle on a closed edge or to route one to it, so a
  vehicle departing in the quarter hour before a closure (it may wait that long to be
  inserted) or during it starts instead on an edge leading into the closed one if that is
  its origin, and ends on an edge leading out of it if that is its destination; one whose
  route crosses the closed edge becomes a trip that SUMO routes around the closure. A
  vehicle left with no way at all (one the od-shift or a surge sent where only the closed
  edge leads) is left out while the closure lasts; a closure of an edge where traffic
  enters or leaves the network, or one that cuts off a trip of the base demand, is refused
  (:func:`check_edges`). A ``<flow>`` is not changed.

Randomness: one NumPy generator per (seed, period, purpose), so the same seed gives the
same file. The file is cached under ``<cache>/demand/<network>/`` with a key of the source
files, the net, the drift's text, hours and period, and the demand setting.
"""

from __future__ import annotations

import functools
import hashlib
import math
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from networks.demand import (
    _TIMED,
    NoVehiclesError,
    Profile,
    _group,
    _number,
    _top_level,
    _xml,
    draw,
    profile,
    purpose,
)
from networks.drift import Change, Drift, DriftError, duration
from networks.drift_net import RoadGraph, road_graph
from networks.files import atomic_write, file_digest
from networks.generators import default_cache_dir
from networks.scenario import Scenario

RECIPE = "greenphase-drift-4"
"""Version of the long-horizon demand; part of the cache key."""
LEAD_S = 900.0
"""How long before a closure a vehicle from or to the closed edge is moved off it: longer
than a trip across a benchmark network takes, or a wait to be inserted in a jam."""
_NOT_ON_TRIP = {"route", "from", "to", "via", "fromTaz", "toTaz", "fromJunction", "toJunction",
                "departEdge", "arrivalEdge", "departPos", "arrivalPos"}
"""Attributes a vehicle loses when it becomes a trip between two other edges."""


@dataclass
class Vehicle:
    """One vehicle of the long horizon, as the file will hold it."""

    depart: float
    """Absolute departure time in seconds."""
    id: str
    attributes: dict[str, str]
    """Without id and depart."""
    tag: str = "trip"
    body: str = ""
    origin: str = ""
    destination: str = ""
    edges: tuple[str, ...] = ()
    """The vehicle's route, when it has one."""

    def as_trip(self, origin: str, destination: str) -> None:
        """Make this a trip from ``origin`` to ``destination`` that SUMO routes."""
        self.attributes = {k: v for k, v in self.attributes.items() if k not in _NOT_ON_TRIP
                           and not (k == "departLane" and v.isdigit())}
        self.attributes |= {"from": origin, "to": destination}
        self.tag, self.body, self.edges = "trip", "", ()
        self.origin, self.destination = origin, destination

    def xml(self) -> str:
        """The vehicle as one line of a route file."""
        attributes = "".join(f"{k}={quoteattr(v)} " for k, v in self.attributes.items())
        head = f"<{self.tag} id={quoteattr(self.id)} depart=\"{self.depart:.2f}\" {attributes}"
        return f"{head.rstrip()}>{self.body}</{self.tag}>" if self.body else f"{head.rstrip()}/>"


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def _named_routes(definitions: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    routes: dict[str, tuple[str, ...]] = {}
    for text in definitions:
        elem = ET.fromstring(text)
        if elem.tag == "route" and elem.get("id") and elem.get("edges"):
            routes[elem.get("id", "")] = tuple(elem.get("edges", "").split())
    return routes


@functools.lru_cache(maxsize=4096)
def _embedded(body: str) -> tuple[str, ...]:
    """The edges of the route a vehicle's body holds (none: no route there)."""
    embedded = ET.fromstring(f"<v>{body}</v>").find("route")
    return tuple(embedded.get("edges", "").split()) if embedded is not None else ()


def _vehicle(depart: float, vid: str, tag: str, attributes: dict[str, str], body: str,
             routes: dict[str, tuple[str, ...]]) -> Vehicle:
    """A vehicle with its origin, destination and route read from what it names."""
    edges: tuple[str, ...] = ()
    if tag != "trip":
        if "route" in attributes:
            edges = routes.get(attributes["route"], ())
        elif body:
            edges = _embedded(body)
    origin = attributes.get("from", edges[0] if edges else "")
    destination = attributes.get("to", edges[-1] if edges else "")
    return Vehicle(depart, vid, attributes, "trip" if tag == "trip" else tag, body, origin,
                   destination, edges)


# ------------------------------------------------------------------ checks


def check_edges(drift: Drift, base: Scenario) -> None:
    """The edges a drift names exist in ``base``'s net, and traffic can use them.

    Raises:
        DriftError: One line naming the edge (and some edges the net has).
    """
    named = drift.of("closure") + drift.of("surge")
    if not named:
        return
    graph = road_graph(base.net_file)
    known = set(graph.edges)
    for change in named:
        if change.edge not in known:
            raise DriftError(f"drift: {change}: no edge {change.edge!r} in {base.name}'s net "
                             f"(edges: {graph.sample()})")
        ends = [(graph.entered_from, "enters", "no edge but a U-turn leads into it"),
                (graph.left_to, "leaves", "it leads to no edge but a U-turn")]
        for links, way, why in ends if change.kind == "closure" else ():
            if not links(change.edge):
                raise DriftError(f"drift: {change}: traffic {way} the network on "
                                 f"{change.edge!r} ({why}), so its vehicles could not go "
                                 "around the closure; close an edge inside the network")
        if change.kind == "surge" and len(graph.reachable(change.edge)) < 2:
            raise DriftError(f"drift: {change}: no edge can be reached from {change.edge!r}")
    closures = drift.of("closure")
    if closures:
        _check_detours(closures, base, graph)


def _check_detours(closures: tuple[Change, ...], base: Scenario, graph: RoadGraph) -> None:
    """Refuse a closure that leaves some trip of the demand no way to its destination.

    SUMO stops a simulation at a vehicle it cannot route, and without teleports a vehicle
    that reaches a closed edge with no way around it would wait there for ever.
    """
    source = profile(base)
    routes = _named_routes(source.definitions)
    ends = {(v.origin, v.destination) for g in source.groups
            for v in [_vehicle(0.0, "", g.tag, dict(g.attributes), g.body, routes)]
            if v.origin and v.destination}
    for change in closures:
        cut = sorted((o, d) for o, d in ends if change.edge not in (o, d)
                     and d not in graph.reachable(o, {change.edge}))
        if cut:
            raise DriftError(
                f"drift: {change}: {len(cut)} of the {len(ends)} origin-destination pairs "
                f"of the demand have no way around {change.edge!r} (e.g. {cut[0][0]} -> "
                f"{cut[0][1]}); close an edge that traffic can detour around")


# ------------------------------------------------------------------ periods


def _resampled(drift: Drift, base: Scenario, long: Scenario, seed: int, demand: Any,
               routes: dict[str, tuple[str, ...]], source: Profile) -> Iterator[Vehicle]:
    period, horizon = base.horizon_s, drift.horizon_s
    starts = source.bin_edges()[:-1] - base.begin
    for k in range(math.ceil(horizon / period)):
        offset = k * period
        length = min(period, horizon - offset)
        bins = int(np.count_nonzero(starts < length))
        lo = starts[:bins]
        hi = np.minimum(np.append(starts[1:], period)[:bins], length)
        full = np.append(starts[1:], period)[:bins] - lo
        factor = np.array([drift.growth(offset + (a + b) / 2) for a, b in zip(lo, hi)])
        means = source.means[:, :bins] * demand.scale * factor * (hi - lo) / full
        part = replace(source, begin=long.begin + offset, end=long.begin + offset + length,
                       means=means)
        drawn = draw(part, _seed(seed, k), 1.0)
        for n, (depart, g) in enumerate(zip(drawn.depart, drawn.group)):
            group = source.groups[g]
            yield _vehicle(float(depart), f"p{k}.{n}", group.tag, dict(group.attributes),
                           group.body, routes)


def _repeated(drift: Drift, base: Scenario, long: Scenario,
              routes: dict[str, tuple[str, ...]]) -> Iterator[Vehicle | tuple[float, str]]:
    """The route files' timed elements, period after period (fixed demand)."""
    period = base.horizon_s
    for k in range(math.ceil(drift.horizon_s / period)):
        offset = k * period
        for path in base.route_files:
            for elem in _top_level(Path(path)):
                when = _number(elem.get("depart", elem.get("begin")))
                if when is None or not base.begin <= when < base.end \
                        or when + offset >= long.end:
                    continue
                name = elem.get("id", "") + (f".{k}" if k else "")
                if elem.tag in _TIMED and elem.tag != "flow":
                    group = _group(elem)
                    yield _vehicle(when + offset, name, elem.tag, dict(group.attributes),
                                   group.body, routes)
                    continue
                if elem.get("id") is not None:
                    elem.set("id", name)
                for key in ("depart", "begin", "end"):
                    value = _number(elem.get(key))
                    if value is not None:
                        elem.set(key, f"{min(value + offset, long.end):.2f}")
                yield when + offset, _xml(elem)


# ------------------------------------------------------------------ changes


def _od_pairs(graph: RoadGraph, origins: list[str], destinations: list[str]) -> list[tuple[str,
                                                                                        str]]:
    pairs = []
    for origin in origins:
        reach = graph.reachable(origin)
        pairs += [(origin, d) for d in destinations if d != origin and d in reach]
    return pairs


def _shift(drift: Drift, vehicles: list[Vehicle], begin: float, seed: int,
           graph: RoadGraph) -> None:
    origins = sorted({v.origin for v in vehicles if v.origin})
    destinations = sorted({v.destination for v in vehicles if v.destination})
    pairs = _od_pairs(graph, origins, destinations)
    if len(pairs) < 2:
        raise DriftError("drift: od-shift needs at least two connected origin-destination "
                         "pairs in the demand")
    index = {pair: i for i, pair in enumerate(pairs)}
    rng = np.random.default_rng(_seed(seed, 1))
    chance = rng.random(len(vehicles))
    for vehicle, u in zip(vehicles, chance):
        if not vehicle.origin or u >= drift.shifted_share(vehicle.depart - begin):
            continue
        own = index.get((vehicle.origin, vehicle.destination))
        pick = int(rng.integers(len(pairs) - (own is not None)))
        if own is not None and pick >= own:
            pick += 1
        vehicle.as_trip(*pairs[pick])


def _surges(drift: Drift, begin: float, seed: int, graph: RoadGraph,
            vehicles: list[Vehicle]) -> Iterator[Vehicle]:
    destinations = sorted({v.destination for v in vehicles if v.destination})
    kinds = Counter(v.attributes.get("type", "") for v in vehicles)
    vtype = kinds.most_common(1)[0][0] if kinds else ""
    for i, change in enumerate(drift.of("surge")):
        reach = graph.reachable(change.edge)
        ends = [d for d in destinations if d in reach and d != change.edge] or \
            sorted(reach - {change.edge})
        end = drift.horizon_s if change.end is None else change.end
        rng = np.random.default_rng(_seed(seed, 2, i))
        count = rng.poisson(change.amount * (end - change.start) / 3600)
        times = np.sort(np.floor((change.start + rng.random(count) * (end - change.start))
                                 * 100) / 100)
        picks = rng.integers(len(ends), size=count)
        for n, (t, pick) in enumerate(zip(times, picks)):
            attributes = {"type": vtype} if vtype else {}
            yield Vehicle(begin + float(t), f"surge{i}.{n}", attributes | {
                "from": change.edge, "to": ends[pick]}, origin=change.edge,
                destination=ends[pick])


class _Detours:
    """Where a vehicle can go while some edges are closed, each answer computed once."""

    def __init__(self, graph: RoadGraph) -> None:
        self.graph = graph
        self._reach: dict[tuple[str, frozenset[str]], set[str]] = {}

    def reach(self, origin: str, shut: frozenset[str]) -> set[str]:
        key = (origin, shut)
        if key not in self._reach:
            self._reach[key] = self.graph.reachable(origin, shut)
        return self._reach[key]

    def around(self, closures: tuple[Change, ...], horizon: int, vehicle: Vehicle,
               begin: float) -> bool:
        """Move ``vehicle`` off the closures; False: it has no way while they last."""
        t = vehicle.depart - begin
        shut = frozenset(c.edge for c in closures if c.start <= t < (c.end or horizon))
        soon = frozenset(c.edge for c in closures
                         if c.start - LEAD_S <= t < (c.end or horizon))
        origin, destination = vehicle.origin, vehicle.destination
        if not (shut or soon) or not origin:
            return True
        if origin in soon:
            origin = next((p for p in self.graph.entered_from(origin)
                           if p not in soon and destination in self.reach(p, soon)),
                          origin)
        if destination in soon:
            reach = self.reach(origin, shut | soon)
            destination = next((s for s in self.graph.left_to(destination)
                                if s in reach), destination)
        if origin in soon or destination in soon \
                or destination not in self.reach(origin, shut):
            return False
        if (origin, destination) != (vehicle.origin, vehicle.destination) \
                or shut.intersection(vehicle.edges):
            vehicle.as_trip(origin, destination)
        return True


# ------------------------------------------------------------------ the file


def route_file(drift: Drift, long: Scenario, seed: int, demand: Any,
               cache_dir: Path | None = None) -> Path:
    """The route file of an episode of the drifted ``long`` scenario with ``seed``.

    Raises:
        DriftError: growth or od-shift under ``fixed`` demand, or an unbound drift.
        NoVehiclesError: No vehicle in the whole horizon.
    """
    purpose(int(seed))
    base = drift.base_of(long)
    if demand.mode == "fixed" and (drift.of("growth") or drift.of("od-shift")):
        raise DriftError("drift: growth and od-shift change the Poisson means of resampled "
                         "demand; give --demand resample")
    digest = hashlib.sha256(f"{RECIPE} {drift.text} {drift.horizon_s} {base.begin} "
                            f"{base.end} {demand!s} {demand.bin_s}".encode())
    for path in (base.net_file, *base.route_files):
        digest.update(file_digest(path).encode())
    root = (Path(cache_dir) if cache_dir is not None else default_cache_dir()).expanduser()
    path = root.resolve() / "demand" / base.name / \
        f"drift-{digest.hexdigest()[:20]}-seed{int(seed)}.rou.xml"
    if path.is_file():
        return path
    lines = _draw_all(drift, base, long, int(seed), demand)
    return atomic_write(path, lambda tmp: _write(tmp, drift, demand, seed, *lines))


def _draw_all(drift: Drift, base: Scenario, long: Scenario, seed: int,
              demand: Any) -> tuple[tuple[str, ...], list[tuple[float, str]]]:
    source = profile(base, demand.bin_s)
    routes = _named_routes(source.definitions)
    timed: list[tuple[float, str]] = []
    if demand.mode == "fixed":
        vehicles: list[Vehicle] = []
        for item in _repeated(drift, base, long, routes):
            if isinstance(item, Vehicle):
                vehicles.append(item)
            else:
                timed.append(item)
    else:
        vehicles = list(_resampled(drift, base, long, seed, demand, routes, source))
        timed = [(when + k * base.horizon_s, _shifted(text, k * base.horizon_s, k))
                 for k in range(math.ceil(drift.horizon_s / base.horizon_s))
                 for when, text in source.kept if when + k * base.horizon_s < long.end]
    needs_graph = drift.of("od-shift") or drift.of("surge") or drift.of("closure")
    graph = road_graph(base.net_file) if needs_graph else RoadGraph((), {})
    if drift.of("od-shift"):
        _shift(drift, vehicles, long.begin, seed, graph)
    vehicles += list(_surges(drift, long.begin, seed, graph, vehicles))
    closures = drift.of("closure")
    if closures:
        detours = _Detours(graph)
        vehicles = [v for v in vehicles
                    if detours.around(closures, drift.horizon_s, v, long.begin)]
    if not vehicles and not timed:
        raise NoVehiclesError(f"the drifted demand for seed {seed} has no vehicle over "
                              f"{duration(drift.horizon_s)} on {base.name}")
    timed += [(v.depart, v.xml()) for v in vehicles]
    timed.sort(key=lambda item: item[0])
    return source.definitions, timed


def _shifted(text: str, offset: float, k: int) -> str:
    """A kept element (a person, a container) moved ``offset`` seconds later."""
    if not k:
        return text
    elem = ET.fromstring(text)
    if elem.get("id") is not None:
        elem.set("id", f"{elem.get('id')}.{k}")
    for key in ("depart", "begin", "end"):
        value = _number(elem.get(key))
        if value is not None:
            elem.set(key, f"{value + offset:.2f}")
    return _xml(elem)


def _write(path: Path, drift: Drift, demand: Any, seed: int, definitions: tuple[str, ...],
           timed: list[tuple[float, str]]) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
        about = f"{RECIPE}, {drift} over {drift.hours:g} h, demand {demand}, seed {seed}"
        out.write(f"<!-- greenphase drift: {about.replace('--', '- -')} -->\n<routes>\n")
        for definition in definitions:
            out.write(f"    {definition}\n")
        for _, text in timed:
            out.write(f"    {text}\n")
        out.write("</routes>\n")
