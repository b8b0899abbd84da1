"""Checks of a spec beyond its keys' types: its name, its settings together, and its size.

A spec's ``name`` becomes a folder (``runs/<name>/``), so it is a plain name. Its
settings are checked together as the simulation takes them, so that a value no run
could use is refused while the spec is read, not when its first run starts. And a spec
whose work is above a sane size (:mod:`experiments.limits`) is refused before its
points are expanded, unless ``--allow-large`` or the spec's ``allow_large = true``.
"""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from experiments.limits import (
    TooLargeError,
    check_horizon,
    check_policy,
    check_runs,
)
from experiments.validation import Keyed, SpecError
from networks import NetworkError
from simulator.options import validation_message

if TYPE_CHECKING:
    from experiments.experiment import Experiment
    from experiments.spec import Sweep

_TABLES = {"decision_interval": "signals", "min_green": "signals", "max_green": "signals",
           "yellow": "signals", "all_red": "signals", "protocol": "signals",
           "detector_length": "sensors", "first_wait": "sensors", "faults": "sensors",
           "cleaning": "sensors", "mode": "demand", "scale": "demand", "bin_s": "demand"}
"""The spec table of each simulation setting a spec gives."""


def check_name(name: str) -> None:
    """Refuse a spec name that is not a plain name: a path, ``..``, absolute, hidden.

    Raises:
        Keyed: Naming the key ``name``, for a validator.
    """
    plain = (bool(name.strip()) and not name.startswith(".")
             and not any(sep in name for sep in ("/", "\\", "\0"))
             and not PurePosixPath(name).is_absolute() and not PureWindowsPath(name).drive
             and name.isprintable())
    if not plain:
        raise Keyed("name", f"must be a plain name, without a path or a leading dot (it names "
                            f"the results folder runs/<name>), got {name!r}")


def check_options(experiment: Experiment, point: tuple[tuple[str, Any], ...] = ()) -> None:
    """Refuse settings that each pass but that no simulation takes together.

    Raises:
        SpecError: Naming the spec's key (and the sweep point that set it).
    """
    try:
        experiment.options  # noqa: B018 - builds and validates the simulation settings
    except ValidationError as err:
        key, _, text = validation_message(err).partition(": ")
        message = f"{_TABLES[key]}.{key}: {text}" if key in _TABLES else f"{key}: {text}"
        where = ", ".join(f"{path} = {value!r}" for path, value in point)
        raise SpecError(f"{message} (at the sweep point {where})" if point else message) \
            from None


def run_count(plan: Sweep) -> int:
    """The runs a spec expands to, counted without expanding it (at most: equal runs merge)."""
    points = math.prod(len(values) for _, values in plan.grid)
    points *= plan.samples if plan.random else 1
    return points * len(plan.base.run_controllers) * len(plan.base.seeds)


def check_size(path: Path, *, allow_large: bool = False) -> None:
    """Refuse a spec of more runs than the limit before expanding it.

    Raises:
        SpecError: The spec cannot be read.
        TooLargeError: Above the limit without ``allow_large`` or the spec's key.
    """
    from experiments.spec import read, spec_text

    plan = read(spec_text(path), path)
    try:
        horizon = plan.base.scenario().horizon_s
    except NetworkError:
        horizon = 3600  # the expansion names the network's error
    try:
        check_runs(run_count(plan), horizon, allow_large=allow_large or plan.allow_large)
    except TooLargeError as err:
        raise TooLargeError(f"{path}: {err}") from None


def check_plan(plan: Sweep, source: Path, *, allow_large: bool = False) -> None:
    """Refuse an expanded spec whose horizon or policy networks are above the limits.

    Raises:
        TooLargeError: Above a limit without ``allow_large`` or the spec's key.
    """
    allow = allow_large or plan.allow_large
    units = plan.units
    try:
        horizon = max(u.experiment.scenario().horizon_s for u in units)
        check_horizon(horizon, runs=len(units), allow_large=allow, spec=True)
        widths = {u.train_spec().hidden: u.label for u in units if u.learned}
        for hidden, label in widths.items():
            check_policy(hidden, allow_large=allow, spec=True, what=f"{label}'s policy network")
    except TooLargeError as err:
        raise TooLargeError(f"{source}: {err}") from None
