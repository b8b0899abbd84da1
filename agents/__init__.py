"""Signal controllers: classic (fixed time, Webster, actuated, max-pressure, SOTL) and learned."""

from __future__ import annotations

from agents.base import Controller, ProgramController
from agents.classic import SOTL, Actuated, FixedTime, MaxPressure, RandomPhase, Webster

CLASSIC: dict[str, type[Controller]] = {
    c.name: c for c in (FixedTime, Webster, Actuated, MaxPressure, SOTL, RandomPhase)
}
"""The classic controllers by name, in the order a comparison shows them."""


class UnknownControllerError(ValueError):
    """A controller name that does not exist; the message is one line."""


def make_controller(name: str) -> Controller:
    """Build a controller from its name."""
    if name in CLASSIC:
        return CLASSIC[name]()
    raise UnknownControllerError(
        f"unknown controller {name!r}; known: {', '.join(CLASSIC)}"
    )


__all__ = [
    "CLASSIC",
    "SOTL",
    "Actuated",
    "Controller",
    "FixedTime",
    "MaxPressure",
    "ProgramController",
    "RandomPhase",
    "UnknownControllerError",
    "Webster",
    "make_controller",
]
