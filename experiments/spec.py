"""Experiment specs: TOML files read into frozen, validated dataclasses; sweeps expanded into runs.

One experiment (``greenphase run SPEC``)::

    name = "quick"
    network = "cologne1"              # or: net = "my.net.xml" and routes = ["my.rou.xml"]
    controllers = ["fixed", "max-pressure", "sotl", "dqn"]
    seeds = 3                         # seeds 0..2, or a list: [0, 5, 7]
    horizon_s = 1800                  # from the network's begin; or begin/end in simulated s

    [demand]
    scale = 1.0                       # SUMO's --scale: 1.2 inserts 20% more vehicles
    [signals]
    decision_interval = 5.0
    [sensors]
    faults = "dropout=0.2"            # what the controllers see (training too); also cleaning
    [training]                        # for the learned controllers "dqn" and "ppo"
    episodes = 20
    [training.optim]
    optimizer = "nesterov"
    lr = 0.01

A sweep (``greenphase sweep SPEC``) is the same plus axes: ``[sweep.grid]`` crosses
every listed value of every axis; ``[sweep.random]`` draws ``samples`` random values
of its axes (seeded by ``sample_seed``), crossed with the grid::

    [sweep]
    samples = 4
    sample_seed = 0
    [sweep.grid]
    network = ["cologne1", "cologne3"]
    "training.optim" = [{optimizer = "sgd", lr = 0.01}, {optimizer = "adam", lr = 0.001}]
    [sweep.random]
    "training.dqn.gamma" = {uniform = [0.8, 0.99]}      # also log_uniform, int, or a list

An axis is the dotted path of a spec key; a table value sets several keys together.
Every point of a sweep runs every controller with every seed: a *run unit* is
(resolved experiment, controller, seed), identified by :attr:`RunUnit.hash`, the
SHA-256 of the canonical JSON of everything that determines its metrics.

Unknown keys, wrong types and impossible values raise :class:`SpecError`, whose one-line
message names the file and the key.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import random
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from networks import DEFAULT_NETWORK, NetworkError, Scenario

if TYPE_CHECKING:
    from experiments.train import TrainSpec

LEARNED = ("dqn", "ppo")
"""Controllers a run unit trains (with the ``[training]`` settings) before evaluating them."""
REFERENCE = "fixed"
"""The controller every other is measured against; added to every spec that lacks it."""
DEFAULT_CONTROLLERS = ("fixed", "webster", "actuated", "max-pressure", "sotl", "random")
"""Controllers of a spec that names none (those of ``greenphase compare``)."""
TRAINING_EVAL_SEED_FLOOR = 10_000
"""Training evaluates on SUMO seed 10000 and trains from 100000: held-out seeds stay below."""
DISTRIBUTIONS = ("uniform", "log_uniform", "int")
"""Random-axis distributions besides a list of choices."""
_SET_ELSEWHERE = {
    "algo": "the controller name says it (dqn or ppo)",
    "seed": "each seed of `seeds` is a learner seed",
    "decision_interval": "set it in [signals]",
    "min_green": "set it in [signals]",
    "max_green": "set it in [signals]",
    "faults": "set it in [sensors]",
    "cleaning": "set it in [sensors]",
}
_NOT_AXES = {"name": "the name is not an axis", "controllers": "every point runs every controller",
             "seeds": "every point runs every seed"}


class SpecError(ValueError):
    """A spec that cannot be used; the message is one line naming the file and the key."""


# ------------------------------------------------------------------ the dataclass tree
@dataclass(frozen=True)
class Demand:
    """The traffic demand, on top of the network's route files."""

    scale: float = 1.0
    """Multiplier of the demand (SUMO's ``--scale``): 1.2 inserts 20% more vehicles; > 0."""

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise SpecError(f"scale: must be > 0, got {self.scale}")


@dataclass(frozen=True)
class Signals:
    """How the intersections switch: every change passes through yellow (and all-red)."""

    decision_interval: float = 5.0
    """Seconds between a controller's decisions; > 0."""
    min_green: float = 5.0
    """Shortest green in seconds; > 0."""
    max_green: float = 50.0
    """Longest green in seconds before the next green is forced; >= ``min_green``."""

    def __post_init__(self) -> None:
        for name in ("decision_interval", "min_green", "max_green"):
            if not getattr(self, name) > 0:
                raise SpecError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.max_green < self.min_green:
            raise SpecError(f"max_green: must be >= min_green ({self.min_green}), "
                            f"got {self.max_green}")


@dataclass(frozen=True)
class Sensors:
    """The roadside detectors the controllers read, and how their readings fail."""

    detector_length: float | None = None
    """Cap on a lane-area detector's length in metres; omitted: each covers its whole lane."""
    first_wait: bool = False
    """Whether detectors report the waiting time of the first vehicle in the queue."""
    faults: str = ""
    """Sensor faults the controllers see, ``KIND=VALUE,...`` as ``--faults`` takes them
    (:class:`simulator.faults.FaultConfig`, e.g. ``dropout=0.2,noise=0.1``); empty: exact."""
    cleaning: str = "none"
    """Cleaning of the readings before the controllers: ``none``, ``last`` or ``zero-flag``."""

    def __post_init__(self) -> None:
        from simulator.cleaning import CLEANINGS
        from simulator.faults import FaultConfig, FaultConfigError

        if self.detector_length is not None and not self.detector_length > 0:
            raise SpecError(f"detector_length: must be > 0, got {self.detector_length}")
        try:
            FaultConfig.parse(self.faults)
        except FaultConfigError as err:
            raise SpecError(f"faults: {err}") from None
        if self.cleaning not in CLEANINGS:
            raise SpecError(f"cleaning: unknown {self.cleaning!r}; choose from "
                            f"{', '.join(CLEANINGS)}")

    @property
    def detectors_changed(self) -> bool:
        """Whether the detectors differ from the default ones (length or first wait)."""
        return self.detector_length is not None or self.first_wait


@dataclass(frozen=True)
class Experiment:
    """One experiment: a network and its demand, controllers, seeds and a horizon."""

    name: str = "experiment"
    """A name for people and folders (``runs/<name>/`` by default); not part of a run's hash."""
    network: str | None = None
    """A registered network or ``grid-RxC`` (default ``cologne1`` unless ``net`` is given)."""
    net: str | None = None
    """A SUMO ``.net.xml`` of your own (relative to the spec file); needs ``routes``."""
    routes: tuple[str, ...] = ()
    """Route files for ``net`` (relative to the spec file)."""
    begin: int | None = None
    """Simulated start in s (default: the network's)."""
    end: int | None = None
    """Simulated end in s (default: the network's, or ``begin + horizon_s``)."""
    horizon_s: int | None = None
    """Simulated seconds from ``begin``: a length that fits every network of a sweep."""
    controllers: tuple[str, ...] = DEFAULT_CONTROLLERS
    """Controller names (``fixed`` is added as the reference); ``dqn``/``ppo`` are trained."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """SUMO seeds (in TOML a count N means 0..N-1); a learned controller's learner seed too."""
    trips: bool = True
    """Store every run's per-trip rows (``store/trips/<hash>.parquet``)."""
    demand: Demand = field(default_factory=Demand)
    """The demand."""
    signals: Signals = field(default_factory=Signals)
    """Decision interval and green limits."""
    sensors: Sensors = field(default_factory=Sensors)
    """The detectors."""
    training: TrainSpec | None = None
    """Training settings of the learned controllers (``[training]``: TrainSpec's fields
    except ``algo``, ``seed``, the signal timing and the sensor faults, which come from the
    run, ``[signals]`` and ``[sensors]``); default TrainSpec's."""

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise SpecError("name: must not be empty")
        if self.network is not None and self.net is not None:
            raise SpecError("network: give either network or net/routes, not both")
        if self.net is not None and not self.routes:
            raise SpecError("routes: net needs at least one route file")
        if self.net is None and self.routes:
            raise SpecError("routes: routes need net")
        if self.begin is not None and self.begin < 0:
            raise SpecError(f"begin: must be >= 0, got {self.begin}")
        if self.horizon_s is not None:
            if self.end is not None:
                raise SpecError("horizon_s: give either end or horizon_s, not both")
            if self.horizon_s <= 0:
                raise SpecError(f"horizon_s: must be > 0, got {self.horizon_s}")
        if self.begin is not None and self.end is not None and self.end <= self.begin:
            raise SpecError(f"end: must be after begin ({self.begin}), got {self.end}")
        if not self.controllers:
            raise SpecError("controllers: name at least one controller")
        if len(set(self.controllers)) != len(self.controllers):
            raise SpecError(f"controllers: listed twice: {_twice(self.controllers)}")
        if not self.seeds:
            raise SpecError("seeds: give at least one seed")
        if min(self.seeds) < 0:
            raise SpecError(f"seeds: must be >= 0, got {min(self.seeds)}")
        if len(set(self.seeds)) != len(self.seeds):
            raise SpecError(f"seeds: listed twice: {_twice(self.seeds)}")
        self._check_controllers()

    def _check_controllers(self) -> None:
        from agents import make_controller
        from agents.errors import CheckpointError, TrainedPolicyError, UnknownControllerError

        for name in self.controllers:
            if name in LEARNED:
                continue
            try:
                make_controller(name)
            except (UnknownControllerError, TrainedPolicyError, CheckpointError) as err:
                message = str(err).strip().splitlines()[0]
                raise SpecError(f"controllers: {message}; or a learned one: "
                                f"{', '.join(LEARNED)}") from None
        if not self.learned:
            return
        if self.demand != Demand() or self.sensors.detectors_changed:
            raise SpecError("controllers: training does not take [demand] or the detector "
                            "settings of [sensors] (faults and cleaning it does) yet; drop "
                            f"them or the learned controllers ({', '.join(self.learned)})")
        if max(self.seeds) >= TRAINING_EVAL_SEED_FLOOR:
            raise SpecError(f"seeds: must be below {TRAINING_EVAL_SEED_FLOOR} with learned "
                            "controllers (training uses the seeds above)")

    @property
    def learned(self) -> tuple[str, ...]:
        """The learned controllers of the experiment."""
        return tuple(c for c in self.controllers if c in LEARNED)

    @property
    def run_controllers(self) -> tuple[str, ...]:
        """The controllers that run: the reference first, then the others as listed."""
        return (REFERENCE, *(c for c in self.controllers if c != REFERENCE))

    def scenario(self) -> Scenario:
        """The network, its demand files and the horizon this experiment runs on.

        Raises:
            NetworkError: An unknown network, unreadable files or an impossible horizon.
        """
        import networks

        if self.net is not None:
            begin = 0 if self.begin is None else self.begin
            end = self.end if self.end is not None else begin + (self.horizon_s or 3600)
            return networks.from_files(self.net, list(self.routes), begin, end)
        base = networks.get(self.network or DEFAULT_NETWORK)
        begin = base.begin if self.begin is None else self.begin
        if self.end is not None:
            end = self.end
        elif self.horizon_s is not None:
            end = begin + self.horizon_s
        else:
            end = base.end
        return dataclasses.replace(base, begin=begin, end=end)

    def resolved(self) -> Experiment:
        """This experiment with its network and horizon explicit (``begin`` and ``end``)."""
        sc = self.scenario()
        if self.net is not None:
            return dataclasses.replace(self, net=str(Path(self.net).resolve()),
                                       routes=tuple(str(Path(r).resolve()) for r in self.routes),
                                       begin=sc.begin, end=sc.end, horizon_s=None)
        return dataclasses.replace(self, network=sc.name, begin=sc.begin, end=sc.end,
                                   horizon_s=None)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, as a spec file writes them (unset keys left out)."""
        data = _plain_fields(self)
        if not self.routes:
            del data["routes"]
        if self.training is not None:
            data["training"] = training_table(self.training)
        elif "training" in data:
            del data["training"]
        return data


def _twice(values: Sequence[Any]) -> str:
    return ", ".join(str(v) for v in sorted({v for v in values if values.count(v) > 1}, key=str))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain_fields(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _plain_fields(obj: Any) -> dict[str, Any]:
    return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)
            if getattr(obj, f.name) is not None}


def training_table(spec: TrainSpec) -> dict[str, Any]:
    """A TrainSpec as a spec's ``[training]`` table: without what the run unit sets."""
    data = _plain_fields(spec)
    for key in _SET_ELSEWHERE:
        data.pop(key, None)
    return data


# ------------------------------------------------------------------ reading TOML tables
class _Training:
    """Stands for TrainSpec in type hints, so that torch is imported only by specs that train."""


def _train_spec_class() -> type[TrainSpec]:
    from experiments.train import TrainSpec

    return TrainSpec


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    if cls is _Training:
        cls = _train_spec_class()
    hints = typing.get_type_hints(cls, localns={"TrainSpec": _Training})
    return {f.name: hints[f.name] for f in fields(cls) if f.init}


_DESCRIBE = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _describe(hint: Any) -> str:
    if hint in _DESCRIBE:
        return _DESCRIBE[hint]
    if typing.get_origin(hint) is tuple:
        return f"a list of {_describe(typing.get_args(hint)[0]).removeprefix('a ')}s"
    return "a table"


def _convert(value: Any, hint: Any, key: str) -> Any:
    """``value`` from TOML as the field type ``hint`` wants it; SpecError naming ``key``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = options[0]  # TOML has no null: an optional key is simply left out
    if hint is _Training or dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise SpecError(f"{key}: must be a table, got {value!r}")
        return _build(hint, value, key + ".")
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, list):
            raise SpecError(f"{key}: must be {_describe(hint)}, got {value!r}")
        item = typing.get_args(hint)[0]
        return tuple(_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(hint)
    if ok is None:
        raise SpecError(f"{key}: cannot be set from a spec")
    if not ok:
        raise SpecError(f"{key}: must be {_describe(hint)}, got {value!r}")
    return float(value) if hint is float else value


def _build(cls: Any, table: Mapping[str, Any], where: str) -> Any:
    """``cls`` from a TOML table; ``where`` is the table's key path with a trailing dot."""
    hints = _hints(cls)
    if cls is _Training:
        for key in table:
            if key in _SET_ELSEWHERE:
                raise SpecError(f"{where}{key}: not a training setting here: "
                                f"{_SET_ELSEWHERE[key]}")
    values = {}
    for key, value in table.items():
        if key not in hints or (cls is _Training and key in _SET_ELSEWHERE):
            known = [k for k in hints if not (cls is _Training and k in _SET_ELSEWHERE)]
            raise SpecError(f"{where}{key}: unknown key; known: {', '.join(known)}")
        values[key] = _convert(value, hints[key], where + key)
    return _construct(_train_spec_class() if cls is _Training else cls, values, where)


def _construct(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """``cls(**values)``, its validation errors named by ``where``."""
    try:
        return cls(**values)
    except SpecError as err:
        raise SpecError(f"{where}{err}") from None
    except ValueError as err:  # ConfigError, NetworkError: importing their modules costs torch
        raise SpecError(f"{where.rstrip('.') or 'spec'}: {err}") from None


# ------------------------------------------------------------------ sweeps
@dataclass(frozen=True)
class RandomAxis:
    """A sweep axis whose values are drawn at random."""

    path: str
    """Dotted key of the spec, e.g. ``training.optim.lr``."""
    kind: str
    """``choice`` (one of ``values``) or a distribution of :data:`DISTRIBUTIONS` over
    ``values = (low, high)`` (``int``: integers, both ends included)."""
    values: tuple[Any, ...]
    """The choices, or the distribution's ``(low, high)``."""

    def __post_init__(self) -> None:
        if not self.values:
            raise SpecError(f"{self.path}: give at least one value")
        if self.kind == "choice":
            return
        if self.kind not in DISTRIBUTIONS:
            raise SpecError(f"{self.path}: unknown distribution {self.kind!r}; "
                            f"known: {', '.join(DISTRIBUTIONS)}, or a list of choices")
        low_high = self.values
        if (len(low_high) != 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool)
                           for v in low_high)):
            raise SpecError(f"{self.path}: {self.kind} takes [low, high], got {list(low_high)}")
        if self.kind == "int" and not all(isinstance(v, int) for v in low_high):
            raise SpecError(f"{self.path}: int takes integers, got {list(low_high)}")
        if not low_high[0] <= low_high[1]:
            raise SpecError(f"{self.path}: low must be <= high, got {list(low_high)}")
        if self.kind == "log_uniform" and not low_high[0] > 0:
            raise SpecError(f"{self.path}: log_uniform needs low > 0, got {low_high[0]}")

    def sample(self, rng: random.Random) -> Any:
        """One value (floats rounded to 4 significant digits, so labels stay readable)."""
        if self.kind == "choice":
            return self.values[rng.randrange(len(self.values))]
        low, high = self.values
        if self.kind == "int":
            return rng.randint(low, high)
        if self.kind == "uniform":
            value = rng.uniform(low, high)
        else:
            value = math.exp(rng.uniform(math.log(low), math.log(high)))
        return float(f"{value:.4g}")

    def to_toml_value(self) -> Any:
        """The axis as its ``[sweep.random]`` value."""
        return list(self.values) if self.kind == "choice" else {self.kind: list(self.values)}


@dataclass(frozen=True)
class Sweep:
    """An experiment and the axes to expand it along; a spec without axes is one point."""

    base: Experiment
    """The experiment every point starts from."""
    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    """Grid axes (dotted key, values), crossed in this order."""
    random: tuple[RandomAxis, ...] = ()
    """Random axes, drawn ``samples`` times (each draw crossed with the grid)."""
    samples: int = 0
    """Random draws; at least 1 with random axes, 0 without."""
    sample_seed: int = 0
    """Seed of the random draws: the same seed draws the same points (and hashes)."""

    def __post_init__(self) -> None:
        paths = [p for p, _ in self.grid] + [a.path for a in self.random]
        for path in paths:
            _check_axis(path)
        if len(set(paths)) != len(paths):
            raise SpecError(f"sweep: an axis is listed twice: {_twice(paths)}")
        for path, values in self.grid:
            if not values:
                raise SpecError(f"sweep.grid.{path}: give at least one value")
        if self.random and self.samples < 1:
            raise SpecError(f"sweep.samples: random axes need samples >= 1, got {self.samples}")
        if not self.random and self.samples:
            raise SpecError("sweep.samples: no [sweep.random] axes to sample")

    @property
    def name(self) -> str:
        """The experiment's name."""
        return self.base.name

    @property
    def single(self) -> bool:
        """Whether the spec has no axes (one experiment)."""
        return not self.grid and not self.random

    def points(self) -> list[tuple[tuple[str, Any], ...]]:
        """The axis values of every point, grid order first, then the random draws."""
        grid = [tuple(zip([p for p, _ in self.grid], combo))
                for combo in itertools.product(*(values for _, values in self.grid))]
        if not self.random:
            return grid
        rng = random.Random(self.sample_seed)
        draws = [tuple((a.path, a.sample(rng)) for a in self.random) for _ in range(self.samples)]
        return [g + d for g in grid for d in draws]

    def experiments(self) -> list[tuple[tuple[tuple[str, Any], ...], Experiment]]:
        """Every point with its experiment (validated, not yet resolved)."""
        out = []
        kinds = {p: "grid" for p, _ in self.grid} | {a.path: "random" for a in self.random}
        for point in self.points():
            exp = self.base
            for path, value in point:
                exp = _set_path(exp, path.split("."), value, f"sweep.{kinds[path]}.{path}")
            out.append((point, exp))
        return out

    @cached_property
    def units(self) -> tuple[RunUnit, ...]:
        """Every run unit once: points, then controllers (reference first), then seeds."""
        units: dict[str, RunUnit] = {}
        resolved: dict[str, Experiment] = {}
        for point, exp in self.experiments():
            key = json.dumps(_plain(exp.to_dict()), sort_keys=True, default=str)
            if key not in resolved:
                network_key = next((f"sweep.grid.{p}" for p, _ in point
                                    if p in ("network", "net", "routes")), "network")
                try:
                    resolved[key] = exp.resolved()
                except NetworkError as err:
                    raise SpecError(f"{network_key}: {err}") from None
            for controller in exp.run_controllers:
                for seed in exp.seeds:
                    unit = RunUnit(resolved[key], controller, seed, point)
                    units.setdefault(unit.hash, unit)
        return tuple(units.values())

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain values (``load`` reads back the same sweep)."""
        data = self.base.to_dict()
        if self.single:
            return data
        table: dict[str, Any] = {}
        if self.random:
            table["samples"] = self.samples
            table["sample_seed"] = self.sample_seed
        if self.grid:
            table["grid"] = {p: [_plain(v) for v in values] for p, values in self.grid}
        if self.random:
            table["random"] = {a.path: a.to_toml_value() for a in self.random}
        data["sweep"] = table
        return data


def _check_axis(path: str) -> None:
    parts = path.split(".")
    if parts[0] in _NOT_AXES:
        raise SpecError(f"sweep: {parts[0]} is not an axis: {_NOT_AXES[parts[0]]}")
    cls: Any = Experiment
    for i, part in enumerate(parts):
        hints = _hints(cls)
        if part not in hints or (cls is _Training and part in _SET_ELSEWHERE):
            prefix = ".".join(parts[:i])
            raise SpecError(f"sweep: {path}: {prefix + ' has no' if prefix else 'no'} key "
                            f"{part!r}")
        hint = _unoptional(hints[part])
        if i < len(parts) - 1 and not (hint is _Training or dataclasses.is_dataclass(hint)):
            raise SpecError(f"sweep: {path}: {'.'.join(parts[: i + 1])} is not a table")
        cls = hint


def _is_axis(path: str) -> bool:
    try:
        _check_axis(path)
    except SpecError:
        return False
    return True


def _unoptional(hint: Any) -> Any:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _set_path(obj: Any, parts: list[str], value: Any, key: str) -> Any:
    """``obj`` with the key at ``parts`` set to ``value`` (a table value merges into a table)."""
    cls: type = _Training if _is_train_spec(obj) else type(obj)
    hints = _hints(cls)
    name = parts[0]
    hint = _unoptional(hints[name])
    current = getattr(obj, name)
    if hint is _Training and current is None:
        current = _train_spec_class()()
    if len(parts) > 1 or (isinstance(value, Mapping)
                          and (hint is _Training or dataclasses.is_dataclass(hint))):
        if len(parts) > 1:
            new = _set_path(current, parts[1:], value, key)
        else:
            new = current
            for sub, sub_value in value.items():
                sub_hints = _hints(_Training if hint is _Training else hint)
                if sub not in sub_hints or (hint is _Training and sub in _SET_ELSEWHERE):
                    raise SpecError(f"{key}: unknown key {sub!r}")
                new = _set_path(new, [sub], sub_value, f"{key}.{sub}")
    else:
        new = _convert(value, hints[name], key)
    return _replaced(obj, name, new, key)


def _replaced(obj: Any, name: str, value: Any, key: str) -> Any:
    try:
        return dataclasses.replace(obj, **{name: value})
    except ValueError as err:  # SpecError, ConfigError, NetworkError
        raise SpecError(f"{key}: {str(err).removeprefix(name + ': ')}") from None


def _is_train_spec(obj: Any) -> bool:
    return type(obj).__name__ == "TrainSpec" and type(obj).__module__ == "experiments.train"


# ------------------------------------------------------------------ run units
@dataclass(frozen=True)
class RunUnit:
    """One run: a resolved experiment, one controller and one seed."""

    experiment: Experiment
    """The point's experiment, resolved (network, ``begin`` and ``end`` explicit)."""
    controller: str
    """The controller; a learned one (``dqn``, ``ppo``) is trained with learner seed ``seed``
    and then evaluated on SUMO seed ``seed``, which training never sees."""
    seed: int
    """SUMO seed (and learner seed)."""
    point: tuple[tuple[str, Any], ...] = ()
    """The sweep axis values that made this experiment."""

    @property
    def learned(self) -> bool:
        """Whether the controller is trained by the run."""
        return self.controller in LEARNED

    @property
    def network(self) -> str:
        """The network's name (a user net's file stem)."""
        exp = self.experiment
        if exp.net is not None:
            return Path(exp.net).name.removesuffix(".xml").removesuffix(".net")
        return exp.network or DEFAULT_NETWORK

    def train_spec(self) -> TrainSpec:
        """The training settings of a learned controller's run."""
        exp = self.experiment
        base = exp.training if exp.training is not None else _train_spec_class()()
        return dataclasses.replace(
            base, algo=self.controller, seed=self.seed,
            decision_interval=exp.signals.decision_interval,
            min_green=exp.signals.min_green, max_green=exp.signals.max_green,
            faults=exp.sensors.faults, cleaning=exp.sensors.cleaning,
        )

    def resolved(self) -> dict[str, Any]:
        """The run as plain values (stored with every row)."""
        data = self.experiment.to_dict()
        for key in ("controllers", "seeds", "horizon_s"):
            data.pop(key, None)
        data.pop("training", None)
        data["controller"] = self.controller
        data["seed"] = self.seed
        if self.learned:
            data["training"] = _plain_fields(self.train_spec())
        data["point"] = {p: _plain(v) for p, v in self.point}
        return data

    def identity(self) -> dict[str, Any]:
        """What determines the run's metrics: no names, labels or storage choices."""
        data = self.resolved()
        for key in ("name", "trips", "point"):
            data.pop(key, None)
        if self.experiment.net is not None:
            data["net"] = _file_digest(data["net"])
            data["routes"] = [_file_digest(r) for r in data["routes"]]
        return data

    @cached_property
    def hash(self) -> str:
        """SHA-256 of the canonical JSON of :meth:`identity`."""
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def cell(self) -> str:
        """The axis values that shape the traffic (all but the network and training)."""
        return _label([(p, v) for p, v in self.point
                       if p not in ("network", "net", "routes") and not p.startswith("training")])

    @property
    def setting(self) -> str:
        """A learned controller's training axis values ('' for the others)."""
        if not self.learned:
            return ""
        return _label([(p, v) for p, v in self.point if p.startswith("training")])

    @property
    def label(self) -> str:
        """The controller with its training setting, e.g. ``dqn [optimizer=sgd, lr=0.01]``."""
        return f"{self.controller} [{self.setting}]" if self.setting else self.controller


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if value != "" else '""'


def _label(entries: Sequence[tuple[str, Any]]) -> str:
    pairs: list[tuple[str, Any]] = []
    for path, value in entries:
        if isinstance(value, Mapping):
            pairs += [(k, v) for k, v in value.items()]
        else:
            pairs.append((path.rsplit(".", 1)[-1], value))
    return ", ".join(f"{k}={_fmt(v)}" for k, v in pairs)


@functools.lru_cache(maxsize=256)
def _digest(path: str, mtime_ns: int, size: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _file_digest(path: str) -> str:
    stat = Path(path).stat()
    return _digest(path, stat.st_mtime_ns, stat.st_size)


# ------------------------------------------------------------------ loading and writing
def _flatten(table: Mapping[str, Any], prefix: str, *, random_axes: bool) -> list[tuple[str, Any]]:
    """Axis tables as (dotted path, value): nested TOML tables and dotted keys alike."""
    out: list[tuple[str, Any]] = []
    for key, value in table.items():
        path = f"{prefix}{key}"
        leaf = not isinstance(value, Mapping) or (
            random_axes and len(value) == 1 and isinstance(next(iter(value.values())), list)
            and not _is_axis(f"{path}.{next(iter(value))}"))
        if leaf:
            out.append((path, value))
        else:
            out += _flatten(value, path + ".", random_axes=random_axes)
    return out


def _sweep_from(table: Any, base: Experiment) -> Sweep:
    if not isinstance(table, Mapping):
        raise SpecError(f"sweep: must be a table, got {table!r}")
    known = ("grid", "random", "samples", "sample_seed")
    for key in table:
        if key not in known:
            raise SpecError(f"sweep.{key}: unknown key; known: {', '.join(known)}")
    grid_table = table.get("grid", {})
    random_table = table.get("random", {})
    for key, value in (("grid", grid_table), ("random", random_table)):
        if not isinstance(value, Mapping):
            raise SpecError(f"sweep.{key}: must be a table of axes, got {value!r}")
    grid = []
    for path, values in _flatten(grid_table, "", random_axes=False):
        if not isinstance(values, list):
            raise SpecError(f"sweep.grid.{path}: must be a list of values, got {values!r}")
        grid.append((path, tuple(values)))
    axes = []
    for path, value in _flatten(random_table, "", random_axes=True):
        key = f"sweep.random.{path}"
        if isinstance(value, list):
            axes.append(_construct(RandomAxis, {"path": path, "kind": "choice",
                                                "values": tuple(value)}, "sweep.random."))
        elif isinstance(value, Mapping):
            (kind, bounds), = value.items()
            if not isinstance(bounds, list):
                raise SpecError(f"{key}: {kind} takes [low, high], got {bounds!r}")
            axes.append(_construct(RandomAxis, {"path": path, "kind": kind,
                                                "values": tuple(bounds)}, "sweep.random."))
        else:
            raise SpecError(f"{key}: must be a list of choices or a distribution "
                            f"({', '.join(DISTRIBUTIONS)}), got {value!r}")
    counts = {}
    for key in ("samples", "sample_seed"):
        value = table.get(key, 0)
        counts[key] = _convert(value, int, f"sweep.{key}")
        if counts[key] < 0:
            raise SpecError(f"sweep.{key}: must be >= 0, got {value}")
    return _construct(Sweep, {"base": base, "grid": tuple(grid), "random": tuple(axes),
                              **counts}, "")


def _experiment_from(data: dict[str, Any], source: Path) -> Experiment:
    data = dict(data)
    data.setdefault("name", source.name.removesuffix(".toml"))
    if isinstance(data.get("seeds"), int) and not isinstance(data["seeds"], bool):
        if data["seeds"] < 1:
            raise SpecError(f"seeds: a count must be at least 1, got {data['seeds']}")
        data["seeds"] = list(range(data["seeds"]))
    # files are relative to the spec, so a spec works from any directory
    for key in ("net", "routes"):
        value = data.get(key)
        if isinstance(value, str):
            data[key] = str(source.parent / value) if key == "net" else [value]
    if isinstance(data.get("routes"), list):
        data["routes"] = [str(source.parent / r) if isinstance(r, str) else r
                          for r in data["routes"]]
    return _build(Experiment, data, "")


def parse(text: str, source: Path) -> Sweep:
    """A spec from TOML text; ``source`` names the file (relative paths are read from there).

    Raises:
        SpecError: One line naming the file and the key.
    """
    try:
        data = tomllib.loads(text)
        sweep_table = data.pop("sweep", None)
        base = _experiment_from(data, source)
        plan = Sweep(base) if sweep_table is None else _sweep_from(sweep_table, base)
        plan.units  # noqa: B018 - expands and resolves every point now, so errors come here
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{source}: malformed TOML: {err}") from None
    except SpecError as err:
        raise SpecError(f"{source}: {err}") from None
    return plan


def load(path: str | Path) -> Sweep:
    """Read a spec file: one experiment, or a sweep when it has a ``[sweep]`` table.

    Raises:
        SpecError: The file is missing or malformed, or a key is unknown, of the wrong
            type or impossible; the one-line message names the file and the key.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise SpecError(f"{path}: cannot read the spec: {err.strerror or err}") from None
    return parse(text, path)


def _toml_key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}"
                               for k, v in value.items()) + "}"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def dump_toml(data: Mapping[str, Any]) -> str:
    """Nested plain values as TOML: keys first, then one ``[table]`` per nested mapping."""
    lines: list[str] = []

    def table(prefix: str, mapping: Mapping[str, Any]) -> None:
        plain = [(k, v) for k, v in mapping.items() if not isinstance(v, Mapping) and v is not None]
        nested = [(k, v) for k, v in mapping.items() if isinstance(v, Mapping)]
        if prefix and (plain or not nested):
            lines.extend(["", f"[{prefix}]"])
        lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in plain)
        for key, sub in nested:
            table(f"{prefix}.{_toml_key(key)}" if prefix else _toml_key(key), sub)

    table("", data)
    return "\n".join(lines).lstrip("\n") + "\n"
