"""Demand that varies by seed: a scenario's trips redrawn around their own time profile.

A route file is a fixed list of trips, so a SUMO seed alone changes driver randomness
but never the traffic. Under ``resample`` every seed gets its own draw of the
network's demand: the trips are grouped by what a vehicle is (its route or origin and
destination, its vehicle type and its departure attributes), counted per time bin
(5 min by default) over the horizon, and each (group, bin) gets a Poisson count
around ``count * scale`` with departure times drawn uniformly within the bin. A
``<flow>`` counts as the vehicles it is expected to insert in each bin; a generated
grid's random trips are drawn anew the same way, between the same origins and
destinations. Vehicle types, route definitions, persons and containers are kept as
they are; the draw is written, sorted by departure, into the
cache (``<cache>/demand/<network>/``) under a key of the source files' digest, the
seed, the scale and the bin, so it is made once and read after.

Demand seeds are split by purpose, so that no policy or parameter is chosen on the
traffic it is then measured on (:func:`purpose`):

- evaluation (``compare``, ``evaluate``): seeds ``0 .. 9_999``, the run's seeds ``0..N-1``;
- tuning, and the evaluation episodes that select a checkpoint during training
  (``TrainSpec.eval_seed`` = 10000): seeds ``10_000 .. 99_999``;
- training episodes (``experiments.train.training_seed``): seeds from ``100_000``.

The demand seed of an episode is its SUMO seed.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal
from xml.sax.saxutils import quoteattr

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from networks.errors import NetworkError
from networks.files import atomic_write, file_digest
from networks.generators import default_cache_dir
from networks.scenario import Scenario

__all__ = ["BIN_S", "EVALUATION", "MAX_SCALE", "TRAINING", "TUNING", "Demand", "DemandError",
           "Draw", "NoVehiclesError", "Profile", "parse", "profile", "purpose", "resample",
           "vehicles_due"]

BIN_S = 60
"""Length of a time bin of the demand profile, in seconds: of 60, 120, 300 and 900 s,
the bin whose draws are as hard to serve as the route files they come from (fixed timing
and max-pressure on cologne1, cologne8, grid4x4 and ingolstadt7, tuning seeds
10000-10002: mean delay within 2.1% of the route files' on average, against 5.5%, 8.9%
and 16% with longer bins, which spread out platoons shorter than a bin and so make the
traffic easier; ``experiments/specs/demand-bins.toml``)."""
EVALUATION = range(0, 10_000)
"""Demand seeds of evaluation: a run's seeds ``0..N-1``."""
TUNING = range(10_000, 100_000)
"""Demand seeds of tuning, and of the evaluation episodes that select a checkpoint."""
TRAINING = range(100_000, 2**31)
"""Demand seeds of training episodes (SUMO takes seeds below 2**31)."""
MAX_SCALE = 100.0
"""Largest demand multiplier: a hundred times a network's traffic is gridlock, not a study."""
RECIPE = "greenphase-demand-1"
"""Version of the resampling; part of the cache key, so a changed recipe draws anew."""

_TIMING = {"id", "depart", "arrival", "begin", "end", "number", "period", "vehsPerHour",
           "perHour", "probability"}
"""A vehicle's or flow's attributes that say when, not what: dropped from its group."""
_GIVE = "give fixed or resample, then scale=X or bin_s=S if wanted"
_TIMED = {"vehicle", "trip", "flow"}
_ROUTED = {"route", "routeDistribution"}


MODES = ("fixed", "resample")
"""The demand modes: the route files as they are, or a draw per seed."""


class DemandError(ValueError):
    """A demand setting that cannot be used; the message is one line."""


class NoVehiclesError(NetworkError):
    """A run in which no vehicle is due: its horizon misses the demand (one line naming both).

    Such a run would measure nothing and report a delay of 0 as if every car flowed
    (:func:`networks.due.check_due`).
    """


class Demand(BaseModel):
    """Which traffic a simulation runs: the route files as they are, or a draw per seed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["fixed", "resample"] = "fixed"
    """``fixed``: the route files as they are, every seed the same trips; ``resample``:
    a new draw of the trips for every seed (:func:`resample`)."""
    scale: float = Field(default=1.0, gt=0, le=MAX_SCALE)
    """Multiplier of the demand: under ``fixed`` SUMO's ``--scale``, under ``resample``
    the mean of the Poisson draw; 1.2 inserts about 20% more vehicles."""
    bin_s: int = Field(default=BIN_S, ge=1)
    """Under ``resample``, the seconds of a time bin: the demand keeps its counts per bin
    and loses its timing within one (:data:`BIN_S` says how its default was chosen)."""

    @field_validator("scale", mode="before")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        number = value
        if isinstance(value, str):  # as --demand gives it
            try:
                number = float(value)
            except ValueError:
                return value
        if isinstance(number, int | float) and not isinstance(number, bool) \
                and not (math.isfinite(number) and 0 < number <= MAX_SCALE):
            raise ValueError(f"must be a finite number greater than 0 and at most "
                             f"{MAX_SCALE:g}, got {value!r}")
        return value

    def __str__(self) -> str:
        defaults = Demand()
        changed = [f"{k}={v!r}" for k, v in self if v != getattr(defaults, k) and k != "mode"]
        return ",".join([self.mode, *changed])

    @classmethod
    def parse(cls, text: str, mode: str = "fixed") -> Demand:
        """A demand from text as ``--demand`` takes it: ``resample,scale=1.2``, ``fixed``, ...

        Args:
            text: Comma-separated: a mode (``fixed`` or ``resample``, or ``mode=...``),
                ``scale=X`` and ``bin_s=S``, each at most once.
            mode: The mode when ``text`` names none (``scale=1.2`` alone).

        Raises:
            DemandError: Text that names no valid demand, in one line.
        """
        parts = [p.strip() for p in str(text).split(",")]
        if not any(parts):
            raise DemandError(f"demand: empty; {_GIVE}")
        given: dict[str, str] = {}
        for part in parts:
            key, sep, value = part.partition("=")
            key, value = (key.strip(), value.strip()) if sep else ("mode", key.strip())
            if key not in cls.model_fields:
                raise DemandError(f"demand: unknown setting {key!r} in {text!r}; {_GIVE}")
            if key in given:
                raise DemandError(f"demand: {key} given twice in {text!r}")
            given[key] = value
        given.setdefault("mode", mode)
        try:
            return cls.model_validate(given)
        except ValidationError as err:
            first = err.errors()[0]
            raise DemandError(f"demand: {first['loc'][0]}: {_reason(first)}") from None

    def route_files(self, scenario: Scenario, seed: int) -> tuple[Path, ...]:
        """The route files SUMO runs for an episode with ``seed`` (drawn and cached if needed).

        Every simulation takes its route files from here, so no run starts without a
        vehicle due in its horizon.

        Raises:
            NoVehiclesError: No vehicle of the scenario's demand (or of the draw) is due.
        """
        from networks.due import check_due

        check_due(scenario)
        if self.mode == "fixed":
            return scenario.route_files
        return (resample(scenario, seed, self.scale, bin_s=self.bin_s),)

    def sumo_arguments(self) -> tuple[str, ...]:
        """SUMO's ``--scale`` where SUMO scales the demand (``fixed``), else nothing."""
        if self.mode == "fixed" and self.scale != 1.0:
            return ("--scale", repr(self.scale))
        return ()


def _reason(error: ErrorDetails) -> str:
    if error["type"] == "literal_error":
        return f"unknown {error['input']!r}; choose {' or '.join(MODES)}"
    return str(error["msg"]).removeprefix("Value error, ")


def parse(text: str, mode: str = "fixed") -> Demand:
    """:meth:`Demand.parse`."""
    return Demand.parse(text, mode)


def purpose(seed: int) -> Literal["evaluation", "tuning", "training"]:
    """What a demand seed is for: evaluation, tuning or training (see the module).

    Raises:
        DemandError: a negative seed, or one SUMO does not take.
    """
    for name, seeds in (("evaluation", EVALUATION), ("tuning", TUNING),
                        ("training", TRAINING)):
        if seed in seeds:
            return name  # type: ignore[return-value]
    raise DemandError(f"demand seed must be from 0 to {TRAINING.stop - 1}, got {seed}")


# ---------------------------------------------------------------- the profile


@dataclass(frozen=True)
class Group:
    """Vehicles that are the same but for their id and departure time."""

    tag: Literal["vehicle", "trip"]
    """``vehicle`` (with a route) or ``trip`` (origin and destination, routed by SUMO)."""
    attributes: tuple[tuple[str, str], ...]
    """Route or origin and destination, type, departLane, departSpeed, ..."""
    body: str
    """The vehicle's child elements as XML: an embedded route, stops, parameters."""


@dataclass(frozen=True)
class Profile:
    """A scenario's demand counted per group and time bin, with what is kept as it is."""

    begin: int
    """Start of the first bin (the scenario's begin)."""
    end: int
    """End of the last bin (the scenario's end)."""
    bin_s: int
    """Length of a bin in seconds; the last one ends at :attr:`end`."""
    groups: tuple[Group, ...]
    """The kinds of vehicle, in their first appearance in the files."""
    means: np.ndarray
    """Vehicles per group (rows) and bin (columns) in the source."""
    definitions: tuple[str, ...]
    """Vehicle types, routes and anything else not timed, as XML, in file order."""
    kept: tuple[tuple[float, str], ...]
    """Timed elements not resampled (persons, containers, triggered vehicles), with the
    time they sort by."""

    def bin_edges(self) -> np.ndarray:
        """Start of every bin, then the end of the last."""
        starts = np.arange(self.begin, self.end, self.bin_s, dtype=float)
        return np.append(starts, float(self.end))


def _xml(elem: ET.Element) -> str:
    """``elem`` as XML without the layout whitespace around and inside it."""
    for node in elem.iter():
        node.tail = None
        if node.text is not None and not node.text.strip():
            node.text = None
    return ET.tostring(elem, encoding="unicode")


def _group(elem: ET.Element) -> Group:
    routed = elem.get("route") is not None or any(c.tag in _ROUTED for c in elem)
    tag: Literal["vehicle", "trip"] = (
        "trip" if elem.tag == "trip" or (elem.tag == "flow" and not routed) else "vehicle"
    )
    attributes = tuple((k, v) for k, v in elem.attrib.items() if k not in _TIMING)
    return Group(tag, attributes, "".join(_xml(child) for child in elem))


def flow_vehicles(elem: ET.Element, begin: float, end: float) -> float:
    """Vehicles a ``<flow>`` is expected to insert within [begin, end)."""
    lo = max(float(elem.get("begin", 0)), begin)
    hi = min(float(elem.get("end", end)), end)
    span = max(0.0, hi - lo)
    if elem.get("number") is not None:
        total = float(elem.get("end", end)) - float(elem.get("begin", 0))
        return float(elem.get("number", 0)) * (span / total if total > 0 else 1.0)
    if elem.get("period") is not None:
        period = elem.get("period", "1")
        rate = float(period.removeprefix("exp(").removesuffix(")"))
        return span * rate if period.startswith("exp(") else span / rate
    for key, per in (("vehsPerHour", 3600.0), ("perHour", 3600.0), ("probability", 1.0)):
        if elem.get(key) is not None:
            return span * float(elem.get(key, 0)) / per
    return 0.0


def _top_level(path: Path) -> Iterable[ET.Element]:
    """The elements under the root of a route file, each whole, one at a time."""
    depth, root = 0, None
    # SUMO reads gzipped route files too
    with gzip.open(path) if path.suffix == ".gz" else open(path, "rb") as source:
        try:
            for event, elem in ET.iterparse(source, events=("start", "end")):
                if event == "start":
                    if root is None:
                        root = elem
                        if elem.tag not in ("routes", "additional"):
                            raise NetworkError(f"{path}: not a route file (root <{elem.tag}>)")
                    depth += 1
                    continue
                depth -= 1
                if depth == 1:
                    yield elem
                    root.clear()  # type: ignore[union-attr]  # the file may be large
        except (ET.ParseError, OSError, EOFError) as err:
            raise NetworkError(f"{path}: malformed route file ({err})") from None


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None  # "triggered", "begin", ...


def profile(scenario: Scenario, bin_s: int = BIN_S) -> Profile:
    """Count a scenario's demand per group of vehicles and time bin over its horizon.

    Raises:
        NetworkError: A route file that is missing, malformed or not a route file.
    """
    if bin_s <= 0:
        raise DemandError(f"demand: bin must be > 0 s, got {bin_s}")
    begin, end = scenario.begin, scenario.end
    edges = np.append(np.arange(begin, end, bin_s, dtype=float), float(end))
    index: dict[Group, int] = {}
    rows: list[np.ndarray] = []
    definitions: list[str] = []
    kept: list[tuple[float, str]] = []
    for path in scenario.route_files:
        if not Path(path).is_file():
            raise NetworkError(f"route file not found: {path}")
        for elem in _top_level(Path(path)):
            when = _number(elem.get("depart", elem.get("begin")))
            if elem.tag not in _TIMED:
                if when is None:
                    definitions.append(_xml(elem))
                elif begin <= when < end:
                    kept.append((when, _xml(elem)))
                continue
            if elem.tag != "flow" and when is None:
                kept.append((float(begin), _xml(elem)))
                continue
            group = _group(elem)
            if group not in index:
                index[group] = len(rows)
                rows.append(np.zeros(len(edges) - 1))
            row = rows[index[group]]
            if elem.tag == "flow":
                row += [flow_vehicles(elem, lo, hi) for lo, hi in zip(edges[:-1], edges[1:])]
            elif when is not None and begin <= when < end:
                row[int((when - begin) // bin_s)] += 1
    means = np.array(rows) if rows else np.zeros((0, len(edges) - 1))
    return Profile(begin, end, bin_s, tuple(index), means, tuple(definitions), tuple(kept))


def vehicles_due(scenario: Scenario) -> int:
    """Vehicles due to depart within the scenario's horizon (expected count for random flows)."""
    from networks.due import expected

    return round(expected(scenario))


# ------------------------------------------------------------------- the draw


@dataclass(frozen=True)
class Draw:
    """One seed's vehicles: departure times and groups, sorted by departure."""

    depart: np.ndarray
    """Departure times in seconds, to the hundredth, ascending."""
    group: np.ndarray
    """Index of each vehicle's group in :attr:`Profile.groups`."""

    def digest(self) -> str:
        """A digest of the vehicle list: equal draws, equal digests."""
        data = np.concatenate([self.depart, self.group.astype(float)])
        return hashlib.sha256(data.tobytes()).hexdigest()


def draw(source: Profile, seed: int, scale: float = 1.0) -> Draw:
    """Poisson counts around ``scale`` times each (group, bin) count, uniform departures.

    The generator is NumPy's, seeded with ``seed`` alone: the same seed, the same draw.
    """
    rng = np.random.default_rng(int(seed))
    counts = rng.poisson(source.means * float(scale))
    edges = source.bin_edges()
    group, bins = np.nonzero(counts)
    repeats = counts[group, bins]
    group, bins = np.repeat(group, repeats), np.repeat(bins, repeats)
    lo, width = edges[bins], np.diff(edges)[bins]
    # floored to the hundredth, so that a written time never reaches the bin's end
    depart = np.floor((lo + rng.random(len(lo)) * width) * 100) / 100
    order = np.lexsort((group, depart))
    return Draw(depart[order], group[order])


def _source_key(scenario: Scenario, bin_s: int) -> str:
    digest = hashlib.sha256(f"{RECIPE} {scenario.begin} {scenario.end} {bin_s}".encode())
    for path in scenario.route_files:
        try:
            digest.update(file_digest(path).encode())
        except OSError:
            raise NetworkError(f"route file not found: {path}") from None
    return digest.hexdigest()[:20]


def resample(
    scenario: Scenario,
    seed: int,
    scale: float = 1.0,
    *,
    bin_s: int = BIN_S,
    cache_dir: Path | None = None,
) -> Path:
    """A route file of the scenario's demand drawn anew for ``seed`` (see the module).

    Args:
        scenario: The scenario whose route files are the source.
        seed: The demand seed, 0 to 2**31 - 1 (see :func:`purpose`).
        scale: Multiplier of the mean counts, > 0.
        bin_s: Length of a time bin in seconds.
        cache_dir: Cache root; default :func:`networks.generators.default_cache_dir`.

    Returns:
        The route file in the cache, written on the first call and read after.

    Raises:
        DemandError: A bad seed or scale.
        NetworkError: A route file that cannot be read.
    """
    purpose(int(seed))
    _check_scale(scale)
    root = (Path(cache_dir) if cache_dir is not None else default_cache_dir()).expanduser()
    name = f"{_source_key(scenario, bin_s)}-seed{int(seed)}-scale{float(scale)!r}.rou.xml"
    path = root.resolve() / "demand" / scenario.name / name
    if path.is_file():
        return path
    source = profile(scenario, bin_s)
    vehicles = draw(source, seed, scale)
    if not len(vehicles.depart):
        raise NoVehiclesError(
            f"the demand drawn for seed {seed} has no vehicle due between {scenario.begin} and "
            f"{scenario.end} s on {scenario.name} (expected {source.means.sum() * scale:.3g} "
            "at this scale): raise the scale or lengthen the horizon")
    return atomic_write(path, lambda tmp: _write(tmp, source, vehicles, seed, scale))


def _check_scale(scale: float) -> None:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) \
            or not math.isfinite(scale) or not 0 < scale <= MAX_SCALE:
        raise DemandError(f"demand: scale must be a finite number greater than 0 and at most "
                          f"{MAX_SCALE:g}, got {scale!r}")


def _write(path: Path, source: Profile, vehicles: Draw, seed: int, scale: float) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
        out.write(f"<!-- greenphase demand: {RECIPE}, seed {seed}, scale {scale!r}, "
                  f"bins of {source.bin_s} s -->\n<routes>\n")
        for definition in source.definitions:
            out.write(f"    {definition}\n")
        _write_timed(out, source, vehicles)
        out.write("</routes>\n")


def _write_timed(out: IO[str], source: Profile, vehicles: Draw) -> None:
    """The drawn vehicles and the kept timed elements, merged by time."""
    heads = [
        f"<{g.tag} " + "".join(f"{k}={quoteattr(v)} " for k, v in g.attributes)
        for g in source.groups
    ]
    tails = [f">{g.body}</{g.tag}>" if g.body else "/>" for g in source.groups]
    kept = sorted(source.kept, key=lambda item: item[0])
    k = 0
    for number, (depart, group) in enumerate(zip(vehicles.depart, vehicles.group)):
        while k < len(kept) and kept[k][0] <= depart:
            out.write(f"    {kept[k][1]}\n")
            k += 1
        out.write(f'    {heads[group]}id="v{number}" depart="{depart:.2f}"{tails[group]}\n')
    for _, text in kept[k:]:
        out.write(f"    {text}\n")
