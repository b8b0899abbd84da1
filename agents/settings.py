"""Validated settings of the learners: frozen pydantic models that refuse unknown keys.

A :class:`Settings` model is built from keywords or from a plain mapping (a spec's
table, a checkpoint's dict) and checks every value on the way in. Built directly,
it raises :class:`~agents.errors.ConfigError` with one line that names the key
(``optim.lr: Input should be greater than 0, got -1``); nested in another model, its
errors reach that model's caller as pydantic's, with the whole key path.
Values are strict: a string is not a number and ``true`` is not an integer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from agents.errors import ConfigError
from simulator.options import CheckedModel


class Settings(CheckedModel):
    """Base of the learners' settings: frozen, strict, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True,
                              use_attribute_docstrings=True)

    section: ClassVar[str] = ""
    """The key path of these settings in a training spec (``optim``, ``dqn``, ...)."""
    error: ClassVar[type[ValueError]] = ConfigError
    """What a model built directly raises, with :meth:`error_message`'s line."""

    @classmethod
    def error_message(cls, err: ValidationError) -> str:
        """One line for a validation error of this model (see :func:`config_message`)."""
        return config_message(err, cls)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build from a plain mapping; missing keys take their defaults.

        Raises:
            ConfigError: A key is not a setting, or a value is invalid.
        """
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Every setting by name as plain values, as :meth:`from_dict` reads them."""
        return self.model_dump()

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes``, validated as a new model is."""
        current = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self)(**{**current, **changes})


def one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    """A field check (``AfterValidator``) that refuses any value but ``choices``, listing them."""

    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"unknown {value!r}; choose from {', '.join(choices)}")
        return value

    return check


def config_message(err: ValidationError, model: type[BaseModel]) -> str:
    """One line for a validation error of ``model``: the key path, what is wrong, the value."""
    first = err.errors()[0]
    loc = tuple(str(part) for part in first["loc"])
    section = getattr(model, "section", "")
    key = ".".join(part for part in (section, *loc) if part)
    text = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        known = _fields_at(model, loc[:-1])
        text = f"unknown key; known: {', '.join(known)}" if known else "unknown key"
    elif loc and first["type"] not in ("missing", "value_error", "assertion_error"):
        text += f", got {first['input']!r}"  # a check of ours names the value itself
    return f"{key}: {text}" if key else text


def _fields_at(model: type[BaseModel], path: tuple[str, ...]) -> list[str]:
    """The field names of the model nested at ``path`` in ``model`` (empty if none is)."""
    for name in path:
        field = model.model_fields.get(name)
        inner = field.annotation if field is not None else None
        candidates = [inner, *getattr(inner, "__args__", ())]
        found = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not found:
            return []
        model = found[0]
    return list(model.model_fields)
