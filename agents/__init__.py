"""Signal controllers: the classic ones (fixed, Webster, coordinated, actuated, ...) and learned."""

from __future__ import annotations

from agents.base import Controller, ProgramController
from agents.classic import (
    SOTL,
    Actuated,
    Coordinated,
    FixedTime,
    MaxPressure,
    RandomPhase,
    Webster,
)
from agents.errors import (
    CheckpointError,
    ConfigError,
    TrainedPolicyError,
    UnknownControllerError,
)
from agents.named import ControllerParamsError, is_parameterised, parameterised, split_names

CLASSIC: dict[str, type[Controller]] = {
    c.name: c for c in (FixedTime, Webster, Coordinated, Actuated, MaxPressure, SOTL, RandomPhase)
}
"""The classic controllers by name, in the order a comparison shows them."""


def make_controller(name: str, *, network: str | None = None) -> Controller:
    """Build a controller from its name; ``trained:RUN`` loads a trained run's policy.

    ``NAME[key=value,...]`` is a classic controller with those settings, e.g.
    ``max-pressure[min_hold=10]`` (:mod:`agents.named`); it keeps the text as its name.
    ``tuned:DIR`` is a classic controller with the parameters ``greenphase tune`` wrote to
    ``DIR/params.toml``; given the run's ``network``, one tuned on another is refused.
    ``module:Class`` builds a :class:`Controller` subclass of your own (no arguments) from
    an importable module; it runs in the simulation's process, so it must be picklable.
    """
    if name in CLASSIC:
        return CLASSIC[name]()
    if is_parameterised(name) and ":" not in name.partition("[")[0]:
        return parameterised(name, CLASSIC)
    if name.startswith("tuned:"):
        from agents.tuned import tuned_controller

        return tuned_controller(name.removeprefix("tuned:"), network)
    if name.startswith("trained:"):
        from agents.trained import TrainedController

        return TrainedController(name.removeprefix("trained:"))
    if name.startswith("exported:"):  # a policy file from `greenphase export`
        from agents.exported import ExportedController

        return ExportedController(name.removeprefix("exported:"))
    module, _, attr = name.partition(":")
    if attr and attr.isidentifier() and all(p.isidentifier() for p in module.split(".")):
        return _imported_controller(name, module, attr)
    raise UnknownControllerError(
        f"unknown controller {name!r}; known: {', '.join(CLASSIC)}, NAME[key=value,...], "
        "trained:RUN, exported:FILE, tuned:DIR, module:Class"
    )


def _imported_controller(name: str, module: str, attr: str) -> Controller:
    import importlib

    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise UnknownControllerError(f"controller {name!r}: cannot import it ({err})") from None
    if not (isinstance(cls, type) and issubclass(cls, Controller)):
        raise UnknownControllerError(f"controller {name!r} is not a Controller class")
    return cls()


__all__ = [
    "CLASSIC",
    "CheckpointError",
    "ConfigError",
    "ControllerParamsError",
    "TrainedPolicyError",
    "SOTL",
    "Actuated",
    "Controller",
    "Coordinated",
    "FixedTime",
    "MaxPressure",
    "ProgramController",
    "RandomPhase",
    "UnknownControllerError",
    "Webster",
    "make_controller",
    "split_names",
]
