"""Experiment specs: TOML files read into frozen, validated pydantic models; sweeps expanded.

One experiment (``greenphase run SPEC``)::

    name = "quick"
    network = "cologne1"              # or: net = "my.net.xml" and routes = ["my.rou.xml"]
    controllers = ["fixed", "max-pressure", "sotl", "dqn"]
    seeds = 3                         # seeds 0..2, or a list: [0, 5, 7]
    horizon_s = 1800                  # from the network's begin; or begin/end in simulated s

    [demand]
    mode = "resample"                 # a new draw of the trips per seed; default "fixed"
    scale = 1.0                       # 1.2 inserts about 20% more vehicles
    [signals]
    protocol = "greenphase"           # or "resco", "sumo-rl": fills in the keys not given
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
Every point of a sweep runs every controller with every seed: a *run unit*
(:class:`~experiments.units.RunUnit`) is (resolved experiment, controller, seed).

Unknown keys, wrong types and impossible values raise :class:`SpecError`, whose one-line
message names the file and the key.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import random
import tomllib
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from experiments.experiment import (
    DEFAULT_CONTROLLERS,
    REFERENCE,
    TRAINING_EVAL_SEED_FLOOR,
    Demand,
    Experiment,
    Sensors,
    Signals,
)
from experiments.results import plain
from experiments.spec_checks import check_name, check_options
from experiments.units import LEARNED, RunUnit, training_table
from experiments.validation import (
    Bool,
    Int,
    Keyed,
    SpecError,
    SpecModel,
    Str,
    error_message,
    known_keys,
    table_type,
    twice,
)
from networks import NetworkError
from networks.due import check_due

__all__ = ["DEFAULT_CONTROLLERS", "DISTRIBUTIONS", "LEARNED", "REFERENCE",
           "TRAINING_EVAL_SEED_FLOOR", "Demand", "Experiment", "RandomAxis", "RunUnit",
           "Sensors", "Signals", "SpecError", "Sweep", "load", "parse", "training_table"]

DISTRIBUTIONS = ("uniform", "log_uniform", "int")
"""Random-axis distributions besides a list of choices."""
_NOT_AXES = {"name": "the name is not an axis", "allow_large": "it is the whole spec's",
             "controllers": "every point runs every controller",
             "seeds": "every point runs every seed"}


class RandomAxis(SpecModel):
    """A sweep axis whose values are drawn at random."""

    path: Str
    """Dotted key of the spec, e.g. ``training.optim.lr``."""
    kind: Str
    """``choice`` (one of ``values``) or a distribution of :data:`DISTRIBUTIONS` over
    ``values = (low, high)`` (``int``: integers, both ends included)."""
    values: tuple[Any, ...]
    """The choices, or the distribution's ``(low, high)``."""

    @model_validator(mode="after")
    def _check(self) -> RandomAxis:
        if not self.values:
            raise Keyed(self.path, "give at least one value")
        if self.kind == "choice":
            return self
        if self.kind not in DISTRIBUTIONS:
            raise Keyed(self.path, f"unknown distribution {self.kind!r}; known: "
                                    f"{', '.join(DISTRIBUTIONS)}, or a list of choices")
        low_high = self.values
        if (len(low_high) != 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool)
                           for v in low_high)):
            raise Keyed(self.path, f"{self.kind} takes [low, high], got {list(low_high)}")
        if self.kind == "int" and not all(isinstance(v, int) for v in low_high):
            raise Keyed(self.path, f"int takes integers, got {list(low_high)}")
        if not low_high[0] <= low_high[1]:
            raise Keyed(self.path, f"low must be <= high, got {list(low_high)}")
        if self.kind == "log_uniform" and not low_high[0] > 0:
            raise Keyed(self.path, f"log_uniform needs low > 0, got {low_high[0]}")
        return self

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


def check_axis(path: str) -> None:
    """Refuse an axis path that names no key of a spec.

    Raises:
        SpecError: Naming the path and what is wrong with it.
    """
    parts = path.split(".")
    if parts[0] in _NOT_AXES:
        raise SpecError(f"sweep: {parts[0]} is not an axis: {_NOT_AXES[parts[0]]}")
    cls: Any = Experiment
    for i, part in enumerate(parts):
        if part not in known_keys(cls):
            prefix = ".".join(parts[:i])
            raise SpecError(f"sweep: {path}: {prefix + ' has no' if prefix else 'no'} key "
                            f"{part!r}")
        table = table_type(cls, part)
        if i < len(parts) - 1 and table is None:
            raise SpecError(f"sweep: {path}: {'.'.join(parts[: i + 1])} is not a table")
        cls = table


def _is_axis(path: str) -> bool:
    try:
        check_axis(path)
    except SpecError:
        return False
    return True


def _set_path(data: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set a dotted key in plain spec values; a table value merges into the table."""
    for part in parts[:-1]:
        if not isinstance(data.get(part), dict):
            data[part] = {}
        data = data[part]
    last = parts[-1]
    if isinstance(value, Mapping) and isinstance(data.get(last), dict):
        data[last].update(copy.deepcopy(dict(value)))
    else:
        data[last] = copy.deepcopy(value)


Point = tuple[tuple[str, Any], ...]


class Sweep(SpecModel):
    """An experiment and the axes to expand it along; a spec without axes is one point."""

    base: Experiment = Field(default_factory=Experiment)
    """The experiment every point starts from."""
    grid: tuple[tuple[Str, tuple[Any, ...]], ...] = ()
    """Grid axes (dotted key, values), crossed in this order."""
    random: tuple[RandomAxis, ...] = ()
    """Random axes, drawn ``samples`` times (each draw crossed with the grid)."""
    samples: Int = Field(default=0, ge=0)
    """Random draws; at least 1 with random axes, 0 without."""
    sample_seed: Int = Field(default=0, ge=0)
    """Seed of the random draws: the same seed draws the same points (and hashes)."""
    allow_large: Bool = False
    """Run work above the sane limits (:mod:`experiments.limits`), as ``--allow-large``
    does; the spec's top-level key ``allow_large``."""

    def __init__(self, base: Experiment | None = None, /, **data: Any) -> None:
        super().__init__(**({"base": base} if base is not None else {}), **data)

    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @model_validator(mode="after")
    def _axes(self) -> Sweep:
        check_name(self.base.name)
        paths = [p for p, _ in self.grid] + [a.path for a in self.random]
        for path in paths:
            try:
                check_axis(path)
            except SpecError as err:
                raise Keyed("", str(err)) from None
        if len(set(paths)) != len(paths):
            raise Keyed("sweep", f"an axis is listed twice: {twice(paths)}")
        for path, values in self.grid:
            if not values:
                raise Keyed(f"sweep.grid.{path}", "give at least one value")
        if self.random and self.samples < 1:
            raise Keyed("sweep.samples", f"random axes need samples >= 1, got {self.samples}")
        if not self.random and self.samples:
            raise Keyed("sweep.samples", "no [sweep.random] axes to sample")
        return self

    @property
    def name(self) -> str:
        """The experiment's name."""
        return self.base.name

    @property
    def single(self) -> bool:
        """Whether the spec has no axes (one experiment)."""
        return not self.grid and not self.random

    def points(self) -> list[Point]:
        """The axis values of every point, grid order first, then the random draws."""
        grid = [tuple(zip([p for p, _ in self.grid], combo))
                for combo in itertools.product(*(values for _, values in self.grid))]
        if not self.random:
            return grid
        rng = random.Random(self.sample_seed)
        draws = [tuple((a.path, a.sample(rng)) for a in self.random) for _ in range(self.samples)]
        return [g + d for g in grid for d in draws]

    def experiments(self) -> list[tuple[Point, Experiment]]:
        """Every point with its experiment (validated, not yet resolved)."""
        if self.single:
            return [((), self.base)]
        out = []
        kinds = {p: "grid" for p, _ in self.grid} | {a.path: "random" for a in self.random}
        base, open_base = self.base.to_dict(), self.base.protocol_open()
        for point in self.points():
            sets_protocol = any(p in ("signals", "signals.protocol") for p, _ in point)
            data = copy.deepcopy(open_base if sets_protocol else base)
            for path, value in point:
                _set_path(data, path.split("."), value)
            try:
                exp = Experiment.model_validate(data)
            except ValidationError as err:
                raise SpecError(_axis_message(error_message(err, Experiment), kinds)) from None
            out.append((point, exp))
        return out

    @cached_property
    def units(self) -> tuple[RunUnit, ...]:
        """Every run unit once: points, then controllers (reference first), then seeds."""
        units: dict[str, RunUnit] = {}
        resolved: dict[str, Experiment] = {}
        for point, exp in self.experiments():
            key = json.dumps(exp.to_dict(), sort_keys=True, default=str)
            if key not in resolved:
                network_key = next((f"sweep.grid.{p}" for p, _ in point
                                    if p in ("network", "net", "routes")), "network")
                try:
                    resolved[key] = exp.resolved()
                    check_due(resolved[key].scenario())
                except NetworkError as err:
                    raise SpecError(f"{network_key}: {err}") from None
                check_options(exp, point)
            for controller in exp.run_controllers:
                for seed in exp.seeds:
                    unit = RunUnit(resolved[key], controller, seed, point)
                    units.setdefault(unit.hash, unit)
        return tuple(units.values())

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain values (``load`` reads back the same sweep)."""
        data = self.base.to_dict()
        if self.allow_large:
            data["allow_large"] = True
        if self.single:
            return data
        table: dict[str, Any] = {}
        if self.random:
            table["samples"] = self.samples
            table["sample_seed"] = self.sample_seed
        if self.grid:
            table["grid"] = {p: [plain(v) for v in values] for p, values in self.grid}
        if self.random:
            table["random"] = {a.path: a.to_toml_value() for a in self.random}
        data["sweep"] = table
        return data


def _axis_message(message: str, kinds: Mapping[str, str]) -> str:
    """A point's error named by the axis that set the key, e.g. ``sweep.grid.demand.scale``."""
    key, _, text = message.partition(": ")
    for path, kind in kinds.items():
        if key == path or key.startswith(path + ".") or path.startswith(key + "."):
            return f"sweep.{kind}.{path}: {text if key == path else message}"
    return f"sweep: {message}"


# ------------------------------------------------------------------ loading
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


def _random_axis(path: str, value: Any) -> RandomAxis:
    key = f"sweep.random.{path}"
    if isinstance(value, list):
        kind, values = "choice", tuple(value)
    elif isinstance(value, Mapping):
        (kind, bounds), = value.items()
        if not isinstance(bounds, list):
            raise SpecError(f"{key}: {kind} takes [low, high], got {bounds!r}")
        values = tuple(bounds)
    else:
        raise SpecError(f"{key}: must be a list of choices or a distribution "
                        f"({', '.join(DISTRIBUTIONS)}), got {value!r}")
    try:
        return RandomAxis(path=path, kind=kind, values=values)
    except SpecError as err:
        raise SpecError(f"sweep.random.{err}") from None


def _sweep_from(table: Any, base: Experiment, allow: Mapping[str, Any]) -> Sweep:
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
    axes = [_random_axis(path, value)
            for path, value in _flatten(random_table, "", random_axes=True)]
    counts = {k: table[k] for k in ("samples", "sample_seed") if k in table}
    try:
        return Sweep(base, grid=tuple(grid), random=tuple(axes), **counts, **allow)
    except SpecError as err:
        text = str(err)
        raise SpecError(f"sweep.{text}" if text.split(":")[0] in counts else text) from None


def _experiment_from(data: dict[str, Any], source: Path) -> Experiment:
    data = dict(data)
    data.setdefault("name", source.name.removesuffix(".toml").lstrip(".") or "experiment")
    # files are relative to the spec, so a spec works from any directory
    for key in ("net", "routes"):
        value = data.get(key)
        if isinstance(value, str):
            data[key] = str(source.parent / value) if key == "net" else [value]
    if isinstance(data.get("routes"), list):
        data["routes"] = [str(source.parent / r) if isinstance(r, str) else r
                          for r in data["routes"]]
    return Experiment(**data)


def read(text: str, source: Path) -> Sweep:
    """:func:`parse` without expanding the points: the base experiment and the axes.

    Raises:
        SpecError: One line naming the file and the key.
    """
    try:
        data = tomllib.loads(text)
        if not data:
            raise SpecError("the spec is empty: give at least a network or controllers "
                            "(examples in experiments/specs/)")
        sweep_table = data.pop("sweep", None)
        allow = {"allow_large": data.pop("allow_large")} if "allow_large" in data else {}
        base = _experiment_from(data, source)
        if sweep_table is None:
            return Sweep(base, **allow)
        return _sweep_from(sweep_table, base, allow)
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{source}: malformed TOML: {err}") from None
    except SpecError as err:
        raise SpecError(f"{source}: {err}") from None


def parse(text: str, source: Path) -> Sweep:
    """A spec from TOML text; ``source`` names the file (relative paths are read from there).

    Raises:
        SpecError: One line naming the file and the key.
    """
    plan = read(text, source)
    try:
        plan.units  # noqa: B018 - expands and resolves every point now, so errors come here
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
    return parse(spec_text(path), path)


def spec_text(path: Path) -> str:
    """The text of a spec file.

    Raises:
        SpecError: It cannot be read.
    """
    try:
        return path.read_text()
    except OSError as err:
        raise SpecError(f"{path}: cannot read the spec: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a spec: not UTF-8 text") from None
