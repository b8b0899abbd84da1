"""Controller names that carry settings: ``max-pressure[min_hold=10]``, ``sotl[theta=40,mu=3]``.

The text in brackets sets fields of the controller's parameter model
(:class:`~agents.classic.MaxPressureParams`, :class:`~agents.classic.SOTLParams`,
:class:`~simulator.programs.ActuatedParams`, :class:`~simulator.programs.WebsterParams`),
separated by ``,`` or ``;``; ``none`` stands for an unset optional field. The controller
keeps the whole text as its :attr:`~agents.base.Controller.name`, so tables show the
setting. Lists of names split on commas outside brackets only (:func:`split_names`).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ValidationError

from agents.base import Controller
from agents.errors import UnknownControllerError
from simulator.options import validation_message

_NAMED = re.compile(r"(?P<base>[^\[\]]+)\[(?P<settings>[^\[\]]*)\]")


class ControllerParamsError(UnknownControllerError):
    """A ``NAME[key=value,...]`` with an unknown key, a bad value or no such controller."""


def split_names(text: str) -> list[str]:
    """The names of a comma-separated list, e.g. ``fixed,sotl[theta=40,mu=3]`` (two names)."""
    names, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth <= 0:
            names.append(text[start:i])
            start, depth = i + 1, 0
    names.append(text[start:])
    return [name.strip() for name in names if name.strip()]


def is_parameterised(name: str) -> bool:
    """Whether ``name`` has the form ``NAME[...]``."""
    return name.endswith("]") and "[" in name


def parameterised(name: str, classic: dict[str, type[Controller]]) -> Controller:
    """The classic controller ``NAME`` of ``NAME[key=value,...]`` with those settings.

    Raises:
        ControllerParamsError: Malformed text, a controller without settings, an
            unknown key or a value the parameter model refuses (one line).
    """
    match = _NAMED.fullmatch(name.strip())
    if match is None:
        raise ControllerParamsError(f"controller {name!r}: write NAME[key=value,...]")
    base = match["base"].strip()
    models = {n: c.Params for n, c in classic.items() if hasattr(c, "Params")}
    if base not in classic:
        raise ControllerParamsError(f"controller {name!r}: unknown controller {base!r}; "
                                    f"settings are taken by {', '.join(models)}")
    if base not in models:
        raise ControllerParamsError(
            f"controller {name!r}: {base!r} takes no settings; these do: {', '.join(models)}")
    model: type[BaseModel] = models[base]
    values = _settings(name, match["settings"], model)
    try:
        params = model.model_validate(values)
    except ValidationError as err:
        raise ControllerParamsError(validation_message(err, f"controller {name!r}")) from None
    controller = classic[base](params)  # type: ignore[call-arg]
    controller.name = name  # type: ignore[misc]
    return controller


def _settings(name: str, text: str, model: type[BaseModel]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in re.split(r"[,;]", text):
        if not item.strip():
            continue
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key or not value:
            raise ControllerParamsError(f"controller {name!r}: {item.strip()!r} is not key=value")
        if key not in model.model_fields:
            raise ControllerParamsError(f"controller {name!r}: unknown setting {key!r}; "
                                        f"known: {', '.join(model.model_fields)}")
        if key in values:
            raise ControllerParamsError(f"controller {name!r}: {key!r} is given twice")
        values[key] = None if value.lower() == "none" else value
    return values
