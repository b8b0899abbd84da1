"""Signal controllers: classic (fixed time, Webster, actuated, max-pressure, SOTL) and learned."""

from __future__ import annotations

from agents.base import Controller, ProgramController
from agents.classic import SOTL, Actuated, FixedTime, MaxPressure, RandomPhase, Webster
from agents.errors import CheckpointError, TrainedPolicyError, UnknownControllerError

CLASSIC: dict[str, type[Controller]] = {
    c.name: c for c in (FixedTime, Webster, Actuated, MaxPressure, SOTL, RandomPhase)
}
"""The classic controllers by name, in the order a comparison shows them."""


def make_controller(name: str) -> Controller:
    """Build a controller from its name; ``trained:RUN`` loads a trained run's policy."""
    if name in CLASSIC:
        return CLASSIC[name]()
    if name.startswith("trained:"):
        from agents.trained import TrainedController

        return TrainedController(name.removeprefix("trained:"))
    raise UnknownControllerError(
        f"unknown controller {name!r}; known: {', '.join(CLASSIC)}, trained:RUN"
    )


__all__ = [
    "CLASSIC",
    "CheckpointError",
    "TrainedPolicyError",
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
