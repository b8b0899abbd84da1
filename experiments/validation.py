"""Validating specs with pydantic: one line per error, naming the key, for a person to read.

Every spec model (:mod:`experiments.experiment`, :mod:`experiments.spec`) derives from
:class:`SpecModel`: frozen, strict about TOML's types, unknown keys refused, and built in
Python its errors are one :class:`SpecError` line such as
``signals.max_green: must be >= min_green (10.0), got 5.0``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Strict, ValidationError

from simulator.options import CheckedModel

# TOML's types as they are: a string is no number and true no integer
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]

SET_BY_THE_RUN = {
    "algo": "the controller name says it (dqn or ppo)",
    "seed": "each seed of `seeds` is a learner seed",
    "decision_interval": "set it in [signals]",
    "min_green": "set it in [signals]",
    "max_green": "set it in [signals]",
    "faults": "set it in [sensors]",
    "cleaning": "set it in [sensors]",
    "simulation": "set it in [signals] and [sensors]",
}
"""Training settings a spec's ``[training]`` may not give, since each run unit sets them
itself (:meth:`experiments.units.RunUnit.train_spec`), and where a spec sets them instead."""


class SpecError(ValueError):
    """A spec that cannot be used; the message is one line naming the file and the key."""


class Keyed(ValueError):
    """A validator's error about ``key`` (a dotted path below the validated value)."""

    def __init__(self, key: str, text: str) -> None:
        super().__init__(f"{key}: {text}" if key else text)
        self.key, self.text = key, text


# ------------------------------------------------------------------ one line per error
_WORDS = (("Input should be", "must be"), ("a valid integer", "an integer"),
          ("a valid number", "a number"), ("a valid boolean", "true or false"),
          ("a valid string", "a string"), ("a valid tuple", "a list"),
          ("a valid dictionary", "a table"), ("greater than or equal to", ">="),
          ("greater than", ">"), ("less than or equal to", "<="), ("less than", "<"))


def _fields_of(cls: Any) -> dict[str, Any]:
    """A model's or dataclass's fields and their types (none for anything else)."""
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return {name: f.annotation for name, f in cls.model_fields.items()}
    if dataclasses.is_dataclass(cls) and isinstance(cls, type):
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}
    return {}


def _unoptional(hint: Any) -> Any:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def train_spec_class() -> type:
    """The TrainSpec class, imported when first needed (it brings torch)."""
    from experiments.train import TrainSpec

    return TrainSpec


def table_type(cls: Any, name: str) -> Any:
    """The model or dataclass of table ``name`` inside ``cls`` (None: not a table)."""
    hint = _unoptional(_fields_of(cls).get(name))
    if hint is Any and name == "training":  # typed loosely, so that specs import no torch
        return train_spec_class()
    return hint if _fields_of(hint) else None


def known_keys(cls: Any) -> list[str]:
    """The keys a spec may give in the table of ``cls``."""
    names = list(_fields_of(cls))
    if cls is train_spec_class():
        names = [n for n in names if n not in SET_BY_THE_RUN]
    return names


def _key(parts: Sequence[Any]) -> str:
    key = ""
    for part in parts:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def error_message(err: ValidationError, model: Any) -> str:
    """One line for the first error of validating ``model``: ``key: what is wrong``."""
    first = err.errors()[0]
    parts = list(first["loc"])
    error = (first.get("ctx") or {}).get("error")
    if isinstance(error, Keyed):
        parts += [p for p in error.key.split(".") if p]
        text = error.text
    elif isinstance(error, Exception):
        text = str(error)
    elif first["type"] == "extra_forbidden":
        cls = model
        for part in parts[:-1]:
            cls = table_type(cls, str(part)) if not isinstance(part, int) else cls
        text = f"unknown key; known: {', '.join(known_keys(cls))}" if cls else "unknown key"
    else:
        text = str(first["msg"])
        for old, new in _WORDS:
            text = text.replace(old, new)
        text += f", got {first['input']!r}"
    key = _key(parts)
    return f"{key}: {text}" if key else text


class SpecModel(CheckedModel):
    """Frozen, unknown keys refused; built in Python, its errors are one SpecError line."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    error: ClassVar[type[ValueError]] = SpecError

    @classmethod
    def error_message(cls, err: ValidationError) -> str:
        """One line for a validation error of this model (the module's :func:`error_message`)."""
        return error_message(err, cls)


def twice(values: Sequence[Any]) -> str:
    """The values listed more than once, for a message."""
    return ", ".join(str(v) for v in sorted({v for v in values if values.count(v) > 1}, key=str))


def unknown_keys(given: Mapping[str, Any], built: Mapping[str, Any], prefix: str = "") -> str:
    """The first key of ``given`` that ``built`` (a model's plain values) lacks, or ''."""
    for key, value in given.items():
        if key not in built and value is not None:
            return prefix + key
        if isinstance(value, Mapping) and isinstance(built.get(key), Mapping):
            inner = unknown_keys(value, built[key], f"{prefix}{key}.")
            if inner:
                return inner
    return ""


