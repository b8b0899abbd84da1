"""Run units: one resolved experiment, one controller, one seed; identified by a content hash.

A sweep expands into run units (:attr:`experiments.spec.Sweep.units`); an executor runs
them (:mod:`experiments.executor`); the store files each under :attr:`RunUnit.hash`, the
SHA-256 of the canonical JSON of everything that determines its metrics, so a folder
resumes exactly the runs it lacks.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from experiments.results import plain
from experiments.validation import SET_BY_THE_RUN
from networks import DEFAULT_NETWORK
from networks.files import file_digest

if TYPE_CHECKING:
    from experiments.experiment import Experiment
    from experiments.train import TrainSpec
    from simulator.options import SimulationOptions

LEARNED = ("dqn", "ppo")
"""Controllers a run unit trains (with the ``[training]`` settings) before evaluating them."""


def training_table(spec: TrainSpec) -> dict[str, Any]:
    """A TrainSpec as a spec's ``[training]`` table: without what the run unit sets."""
    data = plain(spec)
    for key in SET_BY_THE_RUN:
        data.pop(key, None)
    return data


def build_train_spec(data: Mapping[str, Any]) -> TrainSpec:
    """A TrainSpec from plain values, validated (pydantic's ``ValidationError`` on bad ones)."""
    return _train_adapter().validate_python(dict(data))


@functools.cache
def _train_adapter() -> Any:
    from pydantic import TypeAdapter

    from experiments.train import TrainSpec

    return TypeAdapter(TrainSpec)


@dataclass(frozen=True)
class RunUnit:
    """One run: a resolved experiment, one controller and one seed."""

    experiment: Experiment
    """The point's experiment, resolved (network, ``begin`` and ``end`` explicit)."""
    controller: str
    """The controller; a learned one (``dqn``, ``ppo``) is trained with learner seed ``seed``
    and then evaluated on SUMO seed ``seed``, which training never sees."""
    seed: int
    """SUMO seed (and learner seed)."""
    point: tuple[tuple[str, Any], ...] = ()
    """The sweep axis values that made this experiment."""

    @property
    def learned(self) -> bool:
        """Whether the controller is trained by the run."""
        return self.controller in LEARNED

    @property
    def network(self) -> str:
        """The network's name (a user net's file stem)."""
        exp = self.experiment
        if exp.net is not None:
            return Path(exp.net).name.removesuffix(".xml").removesuffix(".net")
        return exp.network or DEFAULT_NETWORK

    @property
    def options(self) -> SimulationOptions:
        """How the run's scenario is simulated: [signals], [sensors] and [demand]."""
        return self.experiment.options

    def train_spec(self) -> TrainSpec:
        """The training settings of a learned controller's run.

        The experiment's ``[training]`` with this run's algorithm, learner seed and
        simulation settings.
        """
        exp = self.experiment
        base = plain(exp.training) if exp.training is not None else {}
        return build_train_spec({**base, "algo": self.controller, "seed": self.seed,
                                 "simulation": plain(exp.options)})

    def resolved(self) -> dict[str, Any]:
        """The run as plain values (stored with every row)."""
        data = self.experiment.to_dict()
        for key in ("controllers", "seeds", "horizon_s"):
            data.pop(key, None)
        data.pop("training", None)
        data["controller"] = self.controller
        data["seed"] = self.seed
        if self.learned:
            data["training"] = _flat_training(plain(self.train_spec()))
        data["point"] = {p: plain(v) for p, v in self.point}
        return data

    def identity(self) -> dict[str, Any]:
        """What determines the run's metrics: no names, labels or storage choices."""
        data = self.resolved()
        for key in ("name", "trips", "point"):
            data.pop(key, None)
        if self.experiment.net is not None:
            data["net"] = file_digest(data["net"])
            data["routes"] = [file_digest(r) for r in data["routes"]]
        return data

    @cached_property
    def hash(self) -> str:
        """SHA-256 of the canonical JSON of :meth:`identity`."""
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def cell(self) -> str:
        """The axis values that shape the traffic (all but the network and training)."""
        return _label([(p, v) for p, v in self.point
                       if p not in ("network", "net", "routes") and not p.startswith("training")])

    @property
    def setting(self) -> str:
        """A learned controller's training axis values ('' for the others)."""
        if not self.learned:
            return ""
        return _label([(p, v) for p, v in self.point if p.startswith("training")])

    @property
    def label(self) -> str:
        """The controller with its training setting, e.g. ``dqn [optimizer=sgd, lr=0.01]``."""
        return f"{self.controller} [{self.setting}]" if self.setting else self.controller


FLAT = ("decision_interval", "min_green", "max_green", "faults", "cleaning")
"""The simulation settings a run's training record holds at its top level, as it always
has: the record is part of the run's hash, so stores written before stay resumable."""


def _flat_training(data: dict[str, Any]) -> dict[str, Any]:
    simulation = data.pop("simulation", None)
    if isinstance(simulation, Mapping):
        data |= {key: simulation[key] for key in FLAT}
    return data


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if value != "" else '""'


def _label(entries: Sequence[tuple[str, Any]]) -> str:
    pairs: list[tuple[str, Any]] = []
    for path, value in entries:
        if isinstance(value, Mapping):
            pairs += [(k, v) for k, v in value.items()]
        else:
            pairs.append((path.rsplit(".", 1)[-1], value))
    return ", ".join(f"{k}={_fmt(v)}" for k, v in pairs)

