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
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.fields import FieldInfo

from networks.demand import Demand, DemandError
from networks.drift import Drift
from simulator import protocols
from simulator.sensors import SensorModel

MAX_DECISION_INTERVAL_S = 3600.0
"""Longest decision interval (and shortest green) in seconds: an hour."""
MAX_GREEN_S = 1e9
"""Longest ``max_green`` in seconds: longer than any horizon, so a green is never forced."""
MAX_CLEARANCE_S = 60.0
"""Longest yellow or all-red in seconds."""
MAX_DETECTOR_M = 10_000.0
"""Longest cap on a detector's length in metres."""
_BOUNDED = ("decision_interval", "min_green", "max_green", "yellow", "all_red",
            "detector_length")


def allowed_range(field: FieldInfo) -> str:
    """A numeric field's bounds in words, e.g. ``greater than 0 and at most 3600``."""
    words = {"Gt": "greater than", "Ge": "at least", "Lt": "less than", "Le": "at most"}
    parts = [f"{words[type(m).__name__]} {getattr(m, type(m).__name__.lower()):g}"
             for m in field.metadata if type(m).__name__ in words]
    return " and ".join(parts)


def within(value: float, field: FieldInfo) -> bool:
    """Whether ``value`` meets a numeric field's bounds."""
    checks = {"Gt": lambda a, b: a > b, "Ge": lambda a, b: a >= b,
              "Lt": lambda a, b: a < b, "Le": lambda a, b: a <= b}
    return all(checks[type(m).__name__](value, getattr(m, type(m).__name__.lower()))
               for m in field.metadata if type(m).__name__ in checks)


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

    decision_interval: float = Field(default=5.0, gt=0, le=MAX_DECISION_INTERVAL_S)
    """Seconds between a controller's decisions: a whole number of SUMO steps (of 1 s
    unless ``sumo_args`` set ``--step-length``), at most an hour."""
    min_green: float = Field(default=5.0, gt=0, le=MAX_DECISION_INTERVAL_S)
    """Shortest green in seconds (a green phase without a ``minDur`` of its own)."""
    max_green: float = Field(default=50.0, gt=0, le=MAX_GREEN_S)
    """Longest green in seconds before the next green is forced; at least ``min_green``
    (longer than the horizon: never forced)."""
    yellow: float | None = Field(default=None, gt=0, le=MAX_CLEARANCE_S)
    """Yellow of every change in seconds; ``None``: the network program's own (its longest)."""
    all_red: float | None = Field(default=None, ge=0, le=MAX_CLEARANCE_S)
    """All-red after the yellow in seconds; ``None``: the network program's own (0 if none)."""
    time_to_teleport: float = -1
    """SUMO's teleport threshold in seconds; -1 keeps gridlock as delay instead of hiding it."""
    detector_length: float | None = Field(default=None, gt=0, le=MAX_DETECTOR_M)
    """Cap on a lane-area detector's length in metres; ``None``: each covers its whole lane."""
    first_wait: bool = False
    """Whether detectors report the waiting time of the first vehicle in the queue."""
    faults: FaultsText = ""
    """Sensor faults the controllers see, ``KIND=VALUE,...`` as ``--faults`` takes them
    (:class:`simulator.faults.FaultConfig`, e.g. ``dropout=0.2,noise=0.1``); empty: exact."""
    cleaning: CleaningName = "none"
    """Cleaning of the readings before the controllers: ``none``, ``last`` or ``zero-flag``."""
    demand: Demand = Demand()
    """The traffic: the route files as they are (``fixed``, scaled by SUMO's ``--scale``)
    or drawn anew for every seed (``resample``), and its scale
    (:class:`networks.demand.Demand`); text such as ``resample,scale=1.2`` is read too."""
    sumo_args: tuple[str, ...] = ()
    """Extra SUMO command-line arguments."""
    protocol: str = protocols.DEFAULT
    """The benchmark whose settings these are (:mod:`simulator.protocols`), set by
    :meth:`for_protocol`; a record, which changes nothing by itself."""
    drift: Drift | None = None
    """Traffic that changes over a long horizon (:mod:`networks.drift`), bound to its base
    scenario (``Drift.check``); the simulation then runs the scenario ``Drift.scenario``
    makes. ``None``, the default, is left out of every dump, so no hash changes."""

    @field_validator(*_BOUNDED, mode="before")
    @classmethod
    def _in_range(cls, value: Any, info: ValidationInfo) -> Any:
        """A number out of range, NaN and infinity included, named with the range allowed."""
        if isinstance(value, int | float) and not isinstance(value, bool):
            field = cls.model_fields[str(info.field_name)]
            limits = allowed_range(field)
            if not math.isfinite(value) or not within(value, field):
                raise ValueError(f"must be a finite number {limits}, got {value!r}")
        return value

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, value: str) -> str:
        protocols.get(value)  # a ProtocolError, a ValueError, that pydantic reports
        return value

    @model_validator(mode="before")
    @classmethod
    def _demand_scale(cls, data: Any) -> Any:
        """Read ``demand_scale`` (its name of old) as the scale of :attr:`demand`."""
        if not isinstance(data, Mapping) or "demand_scale" not in data:
            return data
        data = dict(data)
        scale = data.pop("demand_scale")
        demand = data.get("demand", Demand())
        if isinstance(demand, str):
            demand = Demand.parse(demand)
        if isinstance(demand, Demand):
            demand = demand.model_dump()
        data["demand"] = {**demand, "scale": scale} if isinstance(demand, Mapping) else demand
        return data

    @field_validator("demand", mode="before")
    @classmethod
    def _demand_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return Demand.parse(value)
        except DemandError as err:  # pydantic names the field itself
            raise ValueError(str(err).removeprefix("demand: ")) from None

    @model_serializer(mode="wrap")
    def _without_drift(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict) and data.get("drift", 0) is None:
            del data["drift"]  # runs without drift dump (and hash) as before the field was
        return data

    @model_validator(mode="after")
    def _greens(self) -> SimulationOptions:
        step = self.step_length
        steps = self.decision_interval / step
        if steps < 1 - 1e-9 or abs(steps - round(steps)) > 1e-6:
            raise ValueError(
                f"decision_interval: must be a whole number of SUMO steps of {step:g} s, from "
                f"{step:g} to {MAX_DECISION_INTERVAL_S:g} s, got {self.decision_interval!r}")
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
    def for_protocol(
        cls, name: str, network: str | None = None, options: SimulationOptions | None = None,
        **changes: Any,
    ) -> SimulationOptions:
        """The settings of protocol ``name`` on ``network``, explicit ``changes`` winning.

        Args:
            name: A protocol of :data:`simulator.protocols.PROTOCOLS`.
            network: The registered network's name, for a protocol's settings of its own
                (RESCO's arterial4x4); ``None`` or another name: the protocol's general ones.
            options: The options whose other settings (demand, faults, ...) are kept
                (default: the defaults).
            changes: Settings given explicitly, which win over the protocol's.

        Raises:
            simulator.protocols.ProtocolError: ``name`` is no protocol (one line listing them).
            ValidationError: A change is invalid, as :meth:`of` raises it.
        """
        return cls.of(options, **{**protocols.get(name).settings(network), **changes})

    @classmethod
    def from_keywords(
        cls, options: SimulationOptions | None, settings: Mapping[str, Any], where: str,
        network: str | None = None,
    ) -> SimulationOptions:
        """:meth:`of` for a function's keyword arguments, with Python's kind of errors.

        A ``protocol`` keyword applies that preset (:meth:`for_protocol`), the other
        keywords winning over it.

        Args:
            options: The options the keywords change (default: the defaults).
            settings: The keyword arguments, each a field of this class.
            where: The function taking them, named in the errors.
            network: The network's registered name, for a protocol's settings of its own.

        Raises:
            TypeError: A keyword that is no field.
            ValueError: A value that is invalid, in one line naming its field.
        """
        unknown = sorted(set(settings) - {*cls.model_fields, "demand_scale"})
        if unknown:
            raise TypeError(
                f"{where} got an unexpected keyword argument {unknown[0]!r}; simulation "
                f"settings: {', '.join(cls.model_fields)}"
            )
        try:
            if "protocol" in settings:
                rest = {k: v for k, v in settings.items() if k != "protocol"}
                return cls.for_protocol(settings["protocol"], network, options, **rest)
            return cls.of(options, **settings)
        except (ValidationError, protocols.ProtocolError) as err:
            raise ValueError(validation_message(err, where)) from None

    @property
    def step_length(self) -> float:
        """SUMO's step in seconds: 1 unless :attr:`sumo_args` set ``--step-length``."""
        args = list(self.sumo_args)
        for i, arg in enumerate(args):
            name, _, value = arg.partition("=")
            if name == "--step-length":
                text = value or (args[i + 1] if i + 1 < len(args) else "")
                try:
                    step = float(text)
                except ValueError:
                    break
                return step if math.isfinite(step) and step > 0 else 1.0
        return 1.0

    @property
    def demand_scale(self) -> float:
        """Multiplier of the demand: :attr:`demand`'s scale."""
        return self.demand.scale

    @property
    def sensors_faulty(self) -> bool:
        """Whether the controllers see anything but exact readings."""
        return bool(self.faults) or self.cleaning != "none"

    def sensor_model(self) -> SensorModel:
        """The sensor model of :attr:`faults` and :attr:`cleaning` (exact when neither)."""
        aging = self.drift.aging if self.drift is not None else ()
        if aging:
            from simulator.cleaning import CleanedSensors
            from simulator.faults import FaultySensors

            model: SensorModel = FaultySensors(self.faults, aging=aging)
            return model if self.cleaning == "none" else CleanedSensors(model, self.cleaning)
        if not self.sensors_faulty:
            return SensorModel()
        from simulator.cleaning import sensor_model

        return sensor_model(self.faults, self.cleaning)

    def sumo_arguments(self) -> tuple[str, ...]:
        """The SUMO arguments these options add: the demand's, then :attr:`sumo_args`.

        The demand adds ``--scale`` under ``fixed`` only; a resampled draw is scaled itself.
        """
        return (*self.demand.sumo_arguments(), *self.sumo_args)


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


class CheckedModel(BaseModel):
    """A pydantic model that, built directly, raises one line instead of a ``ValidationError``.

    A subclass names the error in :attr:`error` and may word the line in
    :meth:`error_message`. Nested in another model it is validated without its
    ``__init__``, so that the outermost model reports the error with the whole key path.
    """

    error: ClassVar[type[ValueError]] = ValueError
    """What building the model directly raises, with :meth:`error_message`'s line."""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise self.error(self.error_message(err)) from None

    # pydantic calls a model's own __init__ for a nested one unless it is marked as the base's
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def error_message(cls, err: ValidationError) -> str:
        """The one line for a validation error of this model."""
        return validation_message(err)
