"""Every simulation setting in one validated value object, with its defaults written once.

A :class:`SimulationOptions` travels unchanged from the command line or a spec file to
the simulation: the runner, the environments and :class:`~simulator.core.TrafficSimulation`
all take it whole, so adding a setting is one field here and its use where SUMO is driven.
It is frozen, hashable, picklable and plain data (no live objects), so it can be written
to a results folder and sent to another process.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from simulator.sensors import SensorModel


def check_faults(value: str) -> str:
    """``value`` if it is a fault configuration ``KIND=VALUE,...``; a pydantic validator.

    Raises:
        FaultConfigError: (a ``ValueError``, which pydantic reports) it is not.
    """
    from simulator.faults import FaultConfig

    FaultConfig.parse(value)
    return value


def check_cleaning(value: str) -> str:
    """``value`` if it names a cleaning method (:data:`simulator.cleaning.CLEANINGS`)."""
    from simulator.cleaning import CLEANINGS  # imports gymnasium: only when checked

    if value not in CLEANINGS:
        raise ValueError(f"unknown {value!r}; choose from {', '.join(CLEANINGS)}")
    return value


FaultsText = Annotated[str, AfterValidator(check_faults)]
"""A field type for sensor faults as ``--faults`` takes them, checked."""
CleaningName = Annotated[str, AfterValidator(check_cleaning)]
"""A field type for a cleaning method, checked."""


class SimulationOptions(BaseModel):
    """How a scenario is simulated: signal timing, detectors, sensor faults and demand."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    decision_interval: float = Field(default=5.0, gt=0)
    """Seconds between a controller's decisions."""
    min_green: float = Field(default=5.0, gt=0)
    """Shortest green in seconds (a green phase without a ``minDur`` of its own)."""
    max_green: float = Field(default=50.0, gt=0)
    """Longest green in seconds before the next green is forced; at least ``min_green``."""
    time_to_teleport: float = -1
    """SUMO's teleport threshold in seconds; -1 keeps gridlock as delay instead of hiding it."""
    detector_length: float | None = Field(default=None, gt=0)
    """Cap on a lane-area detector's length in metres; ``None``: each covers its whole lane."""
    first_wait: bool = False
    """Whether detectors report the waiting time of the first vehicle in the queue."""
    faults: FaultsText = ""
    """Sensor faults the controllers see, ``KIND=VALUE,...`` as ``--faults`` takes them
    (:class:`simulator.faults.FaultConfig`, e.g. ``dropout=0.2,noise=0.1``); empty: exact."""
    cleaning: CleaningName = "none"
    """Cleaning of the readings before the controllers: ``none``, ``last`` or ``zero-flag``."""
    demand_scale: float = Field(default=1.0, gt=0)
    """Multiplier of the demand (SUMO's ``--scale``): 1.2 inserts 20% more vehicles."""
    sumo_args: tuple[str, ...] = ()
    """Extra SUMO command-line arguments."""

    @field_validator("decision_interval", "min_green", "max_green", "demand_scale")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"must be finite, got {value}")
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

    @classmethod
    def from_keywords(
        cls, options: SimulationOptions | None, settings: Mapping[str, Any], where: str
    ) -> SimulationOptions:
        """:meth:`of` for a function's keyword arguments, with Python's kind of errors.

        Args:
            options: The options the keywords change (default: the defaults).
            settings: The keyword arguments, each a field of this class.
            where: The function taking them, named in the errors.

        Raises:
            TypeError: A keyword that is no field.
            ValueError: A value that is invalid, in one line naming its field.
        """
        unknown = sorted(set(settings) - set(cls.model_fields))
        if unknown:
            raise TypeError(
                f"{where} got an unexpected keyword argument {unknown[0]!r}; simulation "
                f"settings: {', '.join(cls.model_fields)}"
            )
        try:
            return cls.of(options, **settings)
        except ValidationError as err:
            raise ValueError(validation_message(err, where)) from None

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
