"""Protocol presets: the signal timing and observation range of a published benchmark.

A protocol fixes how an externally controlled signal may be driven: how often a
controller decides, the yellow and all-red of every change, the shortest and the
longest green, and how far upstream the detectors see. Each preset holds a
benchmark's values as its own code sets them, so that a figure measured here can be
set next to the benchmark's:

``greenphase``
    This project's defaults (:class:`~simulator.options.SimulationOptions`): decisions
    every 5 s, greens of 5-50 s, yellow and all-red as the network's own program has them,
    detectors over whole lanes. Figures are those of no preset at all.

``resco``
    RESCO (Ault and Sharon, NeurIPS 2021 Datasets and Benchmarks), repository
    ``Pi-Star-Lab/RESCO``. ``resco_benchmark/config/map_config.py``: ``step_length`` 10
    and ``yellow_length`` 3 on every map but arterial4x4 (and arterial5x5), which have 5
    and 2. ``resco_benchmark/multi_signal.py`` (``MultiSignal.step``): every step shows
    the yellow for ``yellow_length`` seconds, then the chosen phase for the rest of the
    step, and a new phase may be chosen at every step; so there is no all-red, no
    longest green, and a green lasts at least ``step_length - yellow_length`` seconds
    (7 s; arterial4x4: 3 s). ``resco_benchmark/config/agent_config.py``:
    ``max_distance`` 200 m for MAXPRESSURE, IDQN, IPPO, MPLight and FMA2C (50 m for
    MAXWAVE), the range within which ``traffic_signal.py`` (``Signal.get_vehicles``)
    sees a vehicle.

``sumo-rl``
    sumo-rl 1.4 (``LucasAlegre/sumo-rl``), ``sumo_rl/environment/env.py``
    (``SumoEnvironment.__init__``): ``delta_time`` 5, ``yellow_time`` 2, ``min_green`` 5,
    ``max_green`` 50; ``sumo_rl/environment/traffic_signal.py``: a change shows yellow
    and then the new green, without all-red; a green is kept while
    ``yellow_time + min_green`` seconds have not passed since the change began (5 s of
    green, as here); the observation covers whole incoming lanes. ``max_green`` is
    stored but never applied (its docstring: "This parameter is currently ignored"), so
    the preset forces no change either.

What still differs from the benchmarks, beyond these settings: the phases a controller
chooses from are the distinct green phases of the network's program (RESCO lists its
own per signal); detectors are lane-area detectors on the incoming lanes, capped at the
observation range (RESCO counts every vehicle whose next signal is within range, over
several upstream lanes); and the controllers, rewards and metrics are greenphase's.

A preset governs the signals greenphase drives. SUMO's own programs (``static``,
``actuated``, ``webster``) run with the clearance times they are written with: they are
signal plans of the network, and sumo-rl's ``fixed_ts`` likewise runs the network's
program as written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

UNLIMITED_GREEN_S = 86_400.0
"""The longest green of a protocol that forces no change: a day, longer than any episode."""


class ProtocolError(ValueError):
    """An unknown protocol name; the message is one line that lists the known ones."""


class Timing(BaseModel):
    """A protocol's settings for one network, where they differ from its own (``None``: same)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    decision_interval: float | None = Field(default=None, gt=0)
    yellow_s: float | None = Field(default=None, gt=0)
    min_green: float | None = Field(default=None, gt=0)


class Protocol(BaseModel):
    """The signal timing and observation range of one benchmark."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    """The name ``--protocol`` takes."""
    source: str
    """Where the values come from."""
    decision_interval: float = Field(gt=0)
    """Seconds between a controller's decisions."""
    yellow_s: float | None = Field(gt=0)
    """Yellow of every change in seconds; ``None``: the network program's own."""
    all_red_s: float | None = Field(ge=0)
    """All-red after the yellow in seconds; ``None``: the network program's own."""
    min_green: float = Field(gt=0)
    """Shortest green in seconds."""
    max_green: float | None = Field(gt=0)
    """Longest green in seconds; ``None``: the benchmark never forces a change."""
    detector_length: float | None = Field(gt=0)
    """Observation range in metres upstream of the stop line; ``None``: whole lanes."""
    networks: Mapping[str, Timing] = Field(default_factory=dict)
    """Settings of particular networks (by registered name) that differ from the above."""

    def for_network(self, network: str | None = None) -> Protocol:
        """This protocol with ``network``'s own settings applied (without the table)."""
        timing = self.networks.get(network, Timing()) if network else Timing()
        changes = timing.model_dump(exclude_none=True)
        return self.model_validate({**self.model_dump(), **changes, "networks": {}})

    def settings(self, network: str | None = None) -> dict[str, Any]:
        """The :class:`~simulator.options.SimulationOptions` fields this protocol sets."""
        own = self.for_network(network)
        return {
            "protocol": self.name,
            "decision_interval": own.decision_interval,
            "yellow": own.yellow_s,
            "all_red": own.all_red_s,
            "min_green": own.min_green,
            "max_green": own.max_green if own.max_green is not None else UNLIMITED_GREEN_S,
            "detector_length": own.detector_length,
        }


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            name="greenphase", source="simulator.options.SimulationOptions' defaults",
            decision_interval=5.0, yellow_s=None, all_red_s=None, min_green=5.0,
            max_green=50.0, detector_length=None,
        ),
        Protocol(
            name="resco",
            source="Pi-Star-Lab/RESCO resco_benchmark/config/map_config.py, agent_config.py, "
                   "multi_signal.py",
            decision_interval=10.0, yellow_s=3.0, all_red_s=0.0, min_green=7.0,
            max_green=None, detector_length=200.0,
            networks={"arterial4x4": Timing(decision_interval=5.0, yellow_s=2.0, min_green=3.0)},
        ),
        Protocol(
            name="sumo-rl",
            source="LucasAlegre/sumo-rl sumo_rl/environment/env.py, traffic_signal.py",
            decision_interval=5.0, yellow_s=2.0, all_red_s=0.0, min_green=5.0,
            max_green=None, detector_length=None,
        ),
    )
}
"""Every preset by name; ``greenphase`` first, the default."""

NAMES: tuple[str, ...] = tuple(PROTOCOLS)
"""The names ``--protocol`` takes."""
DEFAULT = "greenphase"
"""The protocol of :class:`~simulator.options.SimulationOptions`' defaults."""


def get(name: str) -> Protocol:
    """The preset called ``name``.

    Raises:
        ProtocolError: No preset has that name.
    """
    try:
        return PROTOCOLS[name]
    except (KeyError, TypeError):
        raise ProtocolError(
            f"unknown protocol {name!r}; choose from {', '.join(NAMES)}"
        ) from None
