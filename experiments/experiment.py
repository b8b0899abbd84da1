"""The experiment model: a network and its demand, controllers, seeds, horizon and settings.

An :class:`Experiment` is one point of a spec (:mod:`experiments.spec`); every command
builds one (``compare`` and ``evaluate`` from their options). It carries the simulation
settings of ``[signals]``, ``[sensors]`` and ``[demand]`` (:attr:`Experiment.options`)
and the training settings of its learned controllers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from experiments.results import plain
from experiments.units import LEARNED, build_train_spec, training_table
from experiments.validation import (
    SET_BY_THE_RUN,
    Bool,
    Float,
    Int,
    Keyed,
    SpecModel,
    Str,
    error_message,
    train_spec_class,
    twice,
    unknown_keys,
)
from networks import DEFAULT_NETWORK, Scenario
from networks.demand import MODES
from networks.demand import Demand as TrafficDemand
from simulator import protocols
from simulator.options import SimulationOptions, check_cleaning, check_faults

REFERENCE = "fixed"
"""The controller every other is measured against; added to every spec that lacks it."""
DEFAULT_CONTROLLERS = ("fixed", "webster", "actuated", "max-pressure", "sotl", "random")
"""Controllers of a spec that names none (those of ``greenphase compare``)."""
TRAINING_EVAL_SEED_FLOOR = 10_000
"""Training evaluates on SUMO seed 10000 and trains from 100000: held-out seeds stay below."""
_DEFAULT = SimulationOptions()
"""Where the simulation settings of a spec take their defaults."""


class Demand(SpecModel):
    """The traffic demand: the network's route files as they are, or drawn anew per seed."""

    mode: Str = _DEFAULT.demand.mode
    """``fixed``: the route files as they are, every seed the same trips; ``resample``: a
    new draw of the trips for every seed (:func:`networks.demand.resample`)."""
    scale: Float = Field(default=_DEFAULT.demand_scale, gt=0)
    """Multiplier of the demand: 1.2 inserts about 20% more vehicles; > 0."""
    bin_s: Int = Field(default=_DEFAULT.demand.bin_s, ge=1)
    """Under ``resample``, the seconds of a time bin of the demand profile."""

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        if value not in MODES:
            raise ValueError(f"unknown mode {value!r}; choose {' or '.join(MODES)}")
        return value

    def traffic(self) -> TrafficDemand:
        """The demand as the simulation takes it."""
        return TrafficDemand(mode=self.mode, scale=self.scale, bin_s=self.bin_s)  # type: ignore[arg-type]


PROTOCOL_SIGNALS = ("decision_interval", "min_green", "max_green", "yellow", "all_red")
"""The [signals] keys a protocol preset sets where a spec does not give them."""
NEW_DEFAULTS: dict[str, dict[str, Any]] = {
    "demand": {"mode": _DEFAULT.demand.mode, "bin_s": _DEFAULT.demand.bin_s},
    "signals": {"protocol": protocols.DEFAULT},
}
"""Keys that specs gained later, left out of a spec's values (and so of its runs' hashes)
while they keep their defaults: stores written before them resume."""


class Signals(SpecModel):
    """How the intersections switch: every change passes through yellow (and all-red)."""

    decision_interval: Float = Field(default=_DEFAULT.decision_interval, gt=0)
    """Seconds between a controller's decisions; > 0."""
    min_green: Float = Field(default=_DEFAULT.min_green, gt=0)
    """Shortest green in seconds; > 0."""
    max_green: Float = Field(default=_DEFAULT.max_green, gt=0)
    """Longest green in seconds before the next green is forced; >= ``min_green``."""
    protocol: Str = protocols.DEFAULT
    """A benchmark's settings (``greenphase``, ``resco`` or ``sumo-rl``,
    :mod:`simulator.protocols`): they fill in the keys of this table (and the detector
    length of [sensors]) that the spec does not give."""
    yellow: Float | None = Field(default=None, gt=0)
    """Yellow of every change in seconds; omitted: the network program's own."""
    all_red: Float | None = Field(default=None, ge=0)
    """All-red after the yellow in seconds; omitted: the network program's own."""

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, value: str) -> str:
        protocols.get(value)  # a ProtocolError, a ValueError
        return value

    @field_validator("max_green")
    @classmethod
    def _at_least_min_green(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("min_green")
        if low is not None and value < low:
            raise ValueError(f"must be >= min_green ({low}), got {value}")
        return value


class Sensors(SpecModel):
    """The roadside detectors the controllers read, and how their readings fail."""

    detector_length: Float | None = Field(default=_DEFAULT.detector_length, gt=0)
    """Cap on a lane-area detector's length in metres; omitted: each covers its whole lane."""
    first_wait: Bool = _DEFAULT.first_wait
    """Whether detectors report the waiting time of the first vehicle in the queue."""
    faults: Str = _DEFAULT.faults
    """Sensor faults the controllers see, ``KIND=VALUE,...`` as ``--faults`` takes them
    (:class:`simulator.faults.FaultConfig`, e.g. ``dropout=0.2,noise=0.1``); empty: exact."""
    cleaning: Str = _DEFAULT.cleaning
    """Cleaning of the readings before the controllers: ``none``, ``last`` or ``zero-flag``."""

    _faults = field_validator("faults")(check_faults)
    _cleaning = field_validator("cleaning")(check_cleaning)

    @property
    def detectors_changed(self) -> bool:
        """Whether the detectors differ from the default ones (length or first wait)."""
        return (self.detector_length != _DEFAULT.detector_length
                or self.first_wait != _DEFAULT.first_wait)


class Experiment(SpecModel):
    """One experiment: a network and its demand, controllers, seeds and a horizon."""

    name: Str = "experiment"
    """A name for people and folders (``runs/<name>/`` by default); not part of a run's hash."""
    network: Str | None = None
    """A registered network or ``grid-RxC`` (default ``cologne1`` unless ``net`` is given)."""
    net: Str | None = None
    """A SUMO ``.net.xml`` of your own (relative to the spec file); needs ``routes``."""
    routes: tuple[Str, ...] = ()
    """Route files for ``net`` (relative to the spec file)."""
    begin: Int | None = None
    """Simulated start in s (default: the network's)."""
    end: Int | None = None
    """Simulated end in s (default: the network's, or ``begin + horizon_s``)."""
    horizon_s: Int | None = None
    """Simulated seconds from ``begin``: a length that fits every network of a sweep."""
    controllers: tuple[Str, ...] = DEFAULT_CONTROLLERS
    """Controller names (``fixed`` is added as the reference); ``dqn``/``ppo`` are trained."""
    seeds: tuple[Int, ...] = (0, 1, 2)
    """SUMO seeds (a count N means 0..N-1); a learned controller's learner seed too."""
    trips: Bool = True
    """Store every run's per-trip rows (``store/trips/<hash>.parquet``)."""
    demand: Demand = Field(default_factory=Demand)
    """The demand."""
    signals: Signals = Field(default_factory=Signals)
    """Decision interval and green limits."""
    sensors: Sensors = Field(default_factory=Sensors)
    """The detectors."""
    training: Any = None
    """Training settings of the learned controllers (``[training]``: TrainSpec's fields
    except ``algo``, ``seed``, the signal timing and the sensor faults, which come from the
    run, ``[signals]`` and ``[sensors]``); default TrainSpec's."""

    @model_validator(mode="before")
    @classmethod
    def _protocol(cls, data: Any) -> Any:
        """Fill in the settings of ``signals.protocol`` that the spec does not give."""
        signals = data.get("signals") if isinstance(data, Mapping) else None
        if not isinstance(signals, Mapping) or "protocol" not in signals:
            return data
        try:
            preset = protocols.get(signals["protocol"]).settings(data.get("network"))
        except (protocols.ProtocolError, TypeError):
            return data  # the field's validator reports it
        filled = {k: preset[k] for k in PROTOCOL_SIGNALS
                  if k not in signals and preset[k] is not None}
        data = {**data, "signals": {**signals, **filled}}
        sensors = data.get("sensors", {})
        if (preset["detector_length"] is not None and isinstance(sensors, Mapping)
                and "detector_length" not in sensors):
            data["sensors"] = {**sensors, "detector_length": preset["detector_length"]}
        return data

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_count(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise ValueError(f"a count must be at least 1, got {value}")
            return tuple(range(value))
        return value

    @field_validator("training", mode="before")
    @classmethod
    def _training(cls, value: Any) -> Any:
        if value is None or isinstance(value, train_spec_class()):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"must be a table, got {value!r}")
        for key in value:
            if key in SET_BY_THE_RUN:
                raise Keyed(key, f"not a training setting here: {SET_BY_THE_RUN[key]}")
        try:
            spec = build_train_spec(value)
        except ValidationError as err:
            message = error_message(err, train_spec_class())
            key, _, text = message.partition(": ") if err.errors()[0]["loc"] else ("", "", message)
            raise Keyed(key, text) from None
        except ValueError as err:  # a settings class that checks in its constructor
            raise Keyed("", str(err)) from None
        unknown = unknown_keys(value, plain(spec))
        if unknown:
            raise Keyed(unknown, "unknown key")
        return spec

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        checks = [
            (not self.name.strip(), "name", "must not be empty"),
            (self.network is not None and self.net is not None, "network",
             "give either network or net/routes, not both"),
            (self.net is not None and not self.routes, "routes",
             "net needs at least one route file"),
            (self.net is None and bool(self.routes), "routes", "routes need net"),
            (self.begin is not None and self.begin < 0, "begin",
             f"must be >= 0, got {self.begin}"),
            (self.horizon_s is not None and self.end is not None, "horizon_s",
             "give either end or horizon_s, not both"),
            (self.horizon_s is not None and self.horizon_s <= 0, "horizon_s",
             f"must be > 0, got {self.horizon_s}"),
            (self.begin is not None and self.end is not None and self.end <= self.begin, "end",
             f"must be after begin ({self.begin}), got {self.end}"),
            (not self.controllers, "controllers", "name at least one controller"),
            (len(set(self.controllers)) != len(self.controllers), "controllers",
             f"listed twice: {twice(self.controllers)}"),
            (not self.seeds, "seeds", "give at least one seed"),
            (bool(self.seeds) and min(self.seeds) < 0, "seeds",
             f"must be >= 0, got {min(self.seeds, default=0)}"),
            (len(set(self.seeds)) != len(self.seeds), "seeds",
             f"listed twice: {twice(self.seeds)}"),
        ]
        for failed, key, text in checks:
            if failed:
                raise Keyed(key, text)
        self._check_controllers()
        return self

    def _check_controllers(self) -> None:
        from agents import make_controller
        from agents.errors import CheckpointError, TrainedPolicyError, UnknownControllerError

        network = (self.network or DEFAULT_NETWORK if self.net is None
                   else Path(self.net).name.removesuffix(".xml").removesuffix(".net"))
        for name in self.controllers:
            if name in LEARNED:
                continue
            try:
                make_controller(name, network=network)
            except (UnknownControllerError, TrainedPolicyError, CheckpointError) as err:
                message = str(err).strip().splitlines()[0]
                if ":" not in name:
                    message += f"; or a learned one: {', '.join(LEARNED)}"
                raise Keyed("controllers", message) from None
        if not self.learned:
            return
        if self.sensors.detectors_changed:
            raise Keyed("controllers", "training does not take the detector settings of "
                                        "[sensors] (faults and cleaning it does) yet; drop "
                                        f"them or the learned controllers "
                                        f"({', '.join(self.learned)})")
        if max(self.seeds) >= TRAINING_EVAL_SEED_FLOOR:
            raise Keyed("seeds", f"must be below {TRAINING_EVAL_SEED_FLOOR} with learned "
                                  "controllers (training uses the seeds above)")

    @property
    def learned(self) -> tuple[str, ...]:
        """The learned controllers of the experiment."""
        return tuple(c for c in self.controllers if c in LEARNED)

    @property
    def run_controllers(self) -> tuple[str, ...]:
        """The controllers that run: the reference first, then the others as listed."""
        return (REFERENCE, *(c for c in self.controllers if c != REFERENCE))

    @property
    def options(self) -> SimulationOptions:
        """How the experiment is simulated: [signals], [sensors] and [demand]."""
        signals, sensors = self.signals, self.sensors
        return SimulationOptions(
            decision_interval=signals.decision_interval, min_green=signals.min_green,
            max_green=signals.max_green, yellow=signals.yellow, all_red=signals.all_red,
            protocol=signals.protocol, detector_length=sensors.detector_length,
            first_wait=sensors.first_wait, faults=sensors.faults, cleaning=sensors.cleaning,
            demand=self.demand.traffic(),
        )

    def scenario(self) -> Scenario:
        """The network, its demand files and the horizon this experiment runs on.

        Raises:
            NetworkError: An unknown network, unreadable files or an impossible horizon.
        """
        import networks

        if self.net is not None:
            begin = 0 if self.begin is None else self.begin
            end = self.end if self.end is not None else begin + (self.horizon_s or 3600)
            return networks.from_files(self.net, list(self.routes), begin, end)
        base = networks.get(self.network or DEFAULT_NETWORK)
        begin = base.begin if self.begin is None else self.begin
        if self.end is not None:
            end = self.end
        elif self.horizon_s is not None:
            end = begin + self.horizon_s
        else:
            end = base.end
        return dataclasses.replace(base, begin=begin, end=end)

    def resolved(self) -> Experiment:
        """This experiment with its network and horizon explicit (``begin`` and ``end``)."""
        sc = self.scenario()
        if self.net is not None:
            return self.model_copy(update={
                "net": str(Path(self.net).resolve()),
                "routes": tuple(str(Path(r).resolve()) for r in self.routes),
                "begin": sc.begin, "end": sc.end, "horizon_s": None})
        return self.model_copy(update={"network": sc.name, "begin": sc.begin, "end": sc.end,
                                       "horizon_s": None})

    def protocol_open(self) -> dict[str, Any]:
        """:meth:`to_dict` without the settings a protocol fills in that the spec left out.

        A sweep point that changes ``signals.protocol`` starts from these, so that the
        new protocol sets them.
        """
        data = self.to_dict()
        for key in PROTOCOL_SIGNALS:
            if key not in self.signals.model_fields_set:
                data["signals"].pop(key, None)
        if "detector_length" not in self.sensors.model_fields_set:
            data["sensors"].pop("detector_length", None)
        return data

    def to_dict(self) -> dict[str, Any]:
        """Plain values, as a spec file writes them (unset keys left out)."""
        data = plain({name: getattr(self, name) for name in type(self).model_fields
                      if name != "training"})
        if not self.routes:
            del data["routes"]
        for table, defaults in NEW_DEFAULTS.items():
            for key, value in defaults.items():
                if data[table].get(key) == value:
                    del data[table][key]
        if self.training is not None:
            data["training"] = training_table(self.training)
        return data


