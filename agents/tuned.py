"""Tuned classic controllers: ``tuned:DIR`` builds the controller that ``greenphase tune`` chose.

``DIR/params.toml`` names the controller, the network it was tuned on, the demand seeds
the search ran on and the parameters it found best::

    controller = "max-pressure"
    network = "cologne1"

    [parameters]
    min_hold = 12.0

    [demand]
    seeds = [10000, 10001]

The parameters are only valid for the network they were tuned on: a run on another
network refuses them (:func:`tuned_controller` with ``network``).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from agents.base import Controller
from agents.errors import UnknownControllerError
from simulator.options import validation_message

PARAMS_FILE = "params.toml"
"""The file of a tuned folder that :func:`read_tuned` reads."""


class TunedParamsError(UnknownControllerError):
    """A ``tuned:DIR`` that cannot be used: no params.toml, bad values, another network."""


@dataclass(frozen=True)
class Tuned:
    """What a ``params.toml`` holds."""

    controller: str
    """The classic controller's name."""
    network: str
    """The network it was tuned on."""
    parameters: dict[str, Any]
    """The controller's settings, by field of its parameter model."""
    demand: dict[str, Any] = field(default_factory=dict)
    """The demand the search ran on: its seeds, and its mode and scale where known."""
    search: dict[str, Any] = field(default_factory=dict)
    """How the search went: objective, best value, trials."""

    def to_dict(self) -> dict[str, Any]:
        """The document of ``params.toml``."""
        return {"controller": self.controller, "network": self.network,
                "parameters": self.parameters, "demand": self.demand, "search": self.search}


def tunable() -> dict[str, type[BaseModel]]:
    """The parameter model of each classic controller that has parameters, by name."""
    from agents import CLASSIC

    return {name: cls.Params for name, cls in CLASSIC.items() if hasattr(cls, "Params")}


def build(controller: str, parameters: Mapping[str, Any], where: str = "") -> Controller:
    """The classic controller ``controller`` with these parameters (checked, one-line errors).

    Raises:
        TunedParamsError: Not a controller with parameters, or bad parameter values.
    """
    from agents import CLASSIC

    models = tunable()
    label = where or controller
    if controller not in models:
        raise TunedParamsError(f"{label}: {controller!r} has no parameters to set; "
                               f"these have: {', '.join(models)}")
    try:
        params = models[controller].model_validate(dict(parameters))
    except ValidationError as err:
        raise TunedParamsError(validation_message(err, label)) from None
    return CLASSIC[controller](params)  # type: ignore[call-arg]


def read_tuned(folder: str | Path) -> Tuned:
    """The contents of ``folder/params.toml``.

    Raises:
        TunedParamsError: The file is missing, unreadable or lacks a key.
    """
    path = Path(folder) / PARAMS_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TunedParamsError(f"tuned:{folder}: no {PARAMS_FILE} in {folder} "
                               "(write one with `greenphase tune`)") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise TunedParamsError(f"tuned:{folder}: cannot read {path}: "
                               f"{str(err).splitlines()[0]}") from None
    for key, kind in (("controller", str), ("network", str), ("parameters", dict)):
        if not isinstance(data.get(key), kind):
            raise TunedParamsError(f"tuned:{folder}: {path} needs {key!r} "
                                   f"({'a table' if kind is dict else 'a string'})")
    return Tuned(data["controller"], data["network"], data["parameters"],
                 dict(data.get("demand") or {}), dict(data.get("search") or {}))


def tuned_controller(folder: str | Path, network: str | None = None) -> Controller:
    """The controller ``folder/params.toml`` describes; refused on another ``network``.

    Raises:
        TunedParamsError: No usable params.toml, or one tuned on another network.
    """
    tuned = read_tuned(folder)
    if network is not None and tuned.network != network:
        raise TunedParamsError(f"tuned:{folder} was tuned on network {tuned.network!r}, "
                               f"not {network!r}")
    return build(tuned.controller, tuned.parameters, f"tuned:{folder}")
