"""Every simulation setting in one validated value object, with its defaults written once.

A :class:`SimulationOptions` travels unchanged from the command line or a spec file to
the simulation: the runner, the environments and :class:`~simulator.core.TrafficSimulation`
all take it whole, so adding a setting is one field here and its use where SUMO is driven.
It is frozen, hashable, picklable and plain data (no live objects), so it can be written
to a results folder and sent to another process.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from simulator.sensors import SensorModel


class SimulationOptions(BaseModel):
    """How a scenario is simulated: signal timing, detectors, sensor faults and demand."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    decision_interval: float = Field(5.0, gt=0)
    """Seconds between a controller's decisions."""
    min_green: float = Field(5.0, gt=0)
    """Shortest green in seconds (a green phase without a ``minDur`` of its own)."""
    max_green: float = Field(50.0, gt=0)
    """Longest green in seconds before the next green is forced; at least ``min_green``."""
    time_to_teleport: float = -1
    """SUMO's teleport threshold in seconds; -1 keeps gridlock as delay instead of hiding it."""
    detector_length: float | None = Field(None, gt=0)
    """Cap on a lane-area detector's length in metres; ``None``: each covers its whole lane."""
    first_wait: bool = False
    """Whether detectors report the waiting time of the first vehicle in the queue."""
    faults: str = ""
    """Sensor faults the controllers see, ``KIND=VALUE,...`` as ``--faults`` takes them
    (:class:`simulator.faults.FaultConfig`, e.g. ``dropout=0.2,noise=0.1``); empty: exact."""
    cleaning: str = "none"
    """Cleaning of the readings before the controllers: ``none``, ``last`` or ``zero-flag``."""
    demand_scale: float = Field(1.0, gt=0)
    """Multiplier of the demand (SUMO's ``--scale``): 1.2 inserts 20% more vehicles."""
    sumo_args: tuple[str, ...] = ()
    """Extra SUMO command-line arguments."""

    @field_validator("decision_interval", "min_green", "max_green", "demand_scale")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"must be finite, got {value}")
        return value

    @field_validator("faults")
    @classmethod
    def _faults(cls, value: str) -> str:
        from simulator.faults import FaultConfig

        FaultConfig.parse(value)  # FaultConfigError is a ValueError: pydantic reports it
        return value

    @field_validator("cleaning")
    @classmethod
    def _cleaning(cls, value: str) -> str:
        from simulator.cleaning import CLEANINGS

        if value not in CLEANINGS:
            raise ValueError(f"unknown {value!r}; choose from {', '.join(CLEANINGS)}")
        return value

    @model_validator(mode="after")
    def _greens(self) -> SimulationOptions:
        if self.max_green < self.min_green:
            raise ValueError(f"max_green ({self.max_green}) must be >= min_green "
                             f"({self.min_green})")
        return self

    @classmethod
    def of(cls, options: SimulationOptions | None = None, **changes: Any) -> SimulationOptions:
        """``options`` (default: the defaults) with ``changes`` applied and validated."""
        base = options if options is not None else cls()
        if not changes:
            return base
        return cls.model_validate({**base.model_dump(), **changes})

    @property
    def sensors_faulty(self) -> bool:
        """Whether the controllers see anything but exact readings."""
        return bool(self.faults) or self.cleaning != "none"

    def sensor_model(self) -> SensorModel:
        """The sensor model of :attr:`faults` and :attr:`cleaning` (exact when neither)."""
        if not self.sensors_faulty:
            return SensorModel()
        from simulator.cleaning import sensor_model

        return sensor_model(self.faults, self.cleaning)

    def sumo_arguments(self) -> tuple[str, ...]:
        """The SUMO arguments these options add: the demand scale, then :attr:`sumo_args`."""
        scale = ("--scale", repr(self.demand_scale)) if self.demand_scale != 1.0 else ()
        return (*scale, *self.sumo_args)


def validation_message(err: Exception, where: str = "") -> str:
    """One line for a pydantic ``ValidationError`` (or any error): the key, then what is wrong.

    Args:
        err: The error.
        where: What was being read (a file, a command-line option), put in front.
    """
    from pydantic import ValidationError

    if isinstance(err, ValidationError) and err.errors():
        first = err.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        text = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            text = "unknown key"
        message = f"{key}: {text}" if key else text
    else:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"{where}: {message}" if where else message
