"""What observation and reward functions see of one intersection at a decision step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.intersection import Layout

VEHICLE_SPACE_M = 7.5
"""Road length one queued car takes (length plus gap), to turn metres into vehicles."""


@dataclass
class SignalView:
    """One intersection's layout, its detectors, and its current green."""

    layout: Layout
    entry: np.ndarray
    """Detector indices of the incoming lanes, in layout order."""
    exit: np.ndarray
    """Detector indices of the outgoing lanes, in layout order."""
    entry_capacity: np.ndarray
    """Vehicles that fit on each entry detector."""
    exit_capacity: np.ndarray
    """Vehicles that fit on each exit detector."""
    entry_speed_limit: np.ndarray
    """Speed limit of each incoming lane in m/s."""
    green: int = 0
    """Current green phase index."""
    time_in_phase: float = 0.0
    """Seconds the current green has lasted."""

    def phase_one_hot(self) -> np.ndarray:
        """The current green phase as a one-hot vector."""
        out = np.zeros(self.layout.num_phases, dtype=np.float32)
        out[self.green] = 1.0
        return out
