"""The controller interface: a controller sees sensor readings and returns green phases.

A controller never calls SUMO. At each decision step it gets every
intersection's :class:`~simulator.view.SignalView` (its layout, detectors and
current green) and the detectors' :class:`~simulator.sensors.Readings`, and
returns the green phase each signal should show. The intersection's own
rules (yellow, all-red, minimum and maximum green) decide when that happens.

Controllers that are SUMO signal programs (fixed timing, Webster, actuated)
name the program in :attr:`Controller.program`; the simulator switches it on
and the controller is not asked to act.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from simulator.programs import ProgramParams
from simulator.sensors import Readings
from simulator.view import SignalView


class Controller(ABC):
    """Chooses the green phase of every signal at each decision step."""

    name: ClassVar[str]
    """The name a user types (``--controllers``)."""
    program: ClassVar[str | None] = None
    """A SUMO program to run instead of acting (``static``, ``actuated``, ``webster``,
    ``coordinated``)."""
    needs_exits: ClassVar[bool] = False
    """Whether it reads exit detectors on the outgoing lanes."""
    program_params: ProgramParams | None = None
    """Settings of :attr:`program` (default: :mod:`simulator.programs`' defaults)."""

    def reset(self, views: Sequence[SignalView], seed: int) -> None:  # noqa: B027 - optional hook
        """Start an episode on a network with these intersections."""

    @abstractmethod
    def act(self, views: Sequence[SignalView], readings: Readings, dt: float) -> np.ndarray:
        """Green phase index for each intersection; ``dt`` is the decision interval."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ProgramController(Controller):
    """A controller that is a SUMO signal program; it never acts."""

    def act(self, views: Sequence[SignalView], readings: Readings, dt: float) -> np.ndarray:
        """Never called: SUMO's program runs the signals."""
        raise RuntimeError(f"{self.name} runs SUMO's {self.program!r} program and does not act")
