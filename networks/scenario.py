"""A scenario: a road network, its demand and the simulated time window."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from networks.errors import NetworkError
from networks.netinfo import NetInfo, read_net

MAX_TIME_S = 365 * 86_400
"""Latest simulated time a scenario may end at, in seconds: a year (SUMO counts time in
milliseconds; far beyond this it overflows)."""


@dataclass(frozen=True)
class Scenario:
    """A road network with its demand and the simulated time window."""

    name: str
    """Registry name, or the net file's stem for a user network."""
    net_file: Path
    """SUMO ``.net.xml``."""
    route_files: tuple[Path, ...]
    """SUMO route files holding the demand (vehicles, trips or flows)."""
    begin: int
    """Simulated start time in seconds."""
    end: int
    """Simulated end time in seconds: the horizon."""
    description: str = ""
    """One line for ``networks list``."""

    def __post_init__(self) -> None:
        for name in ("begin", "end"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, int | float)
                    or not math.isfinite(value)):
                raise NetworkError(f"{name} must be a finite number of seconds, got {value!r}")
        if self.end > MAX_TIME_S:
            raise NetworkError(f"end must be at most {MAX_TIME_S} s (a year), got {self.end}")
        if self.begin < 0:
            raise NetworkError(f"begin must be >= 0, got {self.begin}")
        if self.end <= self.begin:
            raise NetworkError(f"begin ({self.begin}) must be before end ({self.end})")

    @property
    def horizon_s(self) -> int:
        """Length of the simulated window in seconds."""
        return self.end - self.begin

    @property
    def net(self) -> NetInfo:
        """The parsed net file."""
        return read_net(self.net_file)
