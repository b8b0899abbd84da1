"""Running controllers on scenarios: one episode per (network, controller, seed)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from agents import Controller, make_controller
from networks import Scenario
from simulator import TrafficSimulation


@dataclass(frozen=True)
class RunResult:
    """One finished run."""

    network: str
    controller: str
    seed: int
    kpis: dict[str, float]
    wall_s: float
    trips: pd.DataFrame = field(repr=False)

    def row(self) -> dict[str, Any]:
        """The run as one flat record (the ``runs`` rows of ``compare --json``)."""
        return {
            "controller": self.controller, "seed": self.seed, **self.kpis, "wall_s": self.wall_s
        }


def run_episode(
    scenario: Scenario,
    controller: str | Controller,
    seed: int,
    *,
    decision_interval: float = 5.0,
    min_green: float = 5.0,
    max_green: float = 50.0,
    on_step: Callable[[float], None] | None = None,
    observer: Callable[[TrafficSimulation], None] | None = None,
    **sim_options: Any,
) -> RunResult:
    """Run one controller over the scenario's horizon with SUMO seed ``seed``.

    ``on_step`` is called with the simulated time after each decision step;
    ``observer`` with the running simulation once it has started and after each
    decision step (it may read SUMO, e.g. take GUI screenshots, but not change it).
    """
    ctrl = make_controller(controller) if isinstance(controller, str) else controller
    started = time.perf_counter()
    sim = TrafficSimulation(
        scenario,
        decision_interval=decision_interval,
        min_green=min_green,
        max_green=max_green,
        program=ctrl.program,  # type: ignore[arg-type]
        exit_detectors=ctrl.needs_exits,
        **sim_options,
    )
    try:
        result = sim.run(ctrl, seed, on_step, observer)
    finally:
        sim.close()
    return RunResult(
        scenario.name, ctrl.name, seed, result.kpis, time.perf_counter() - started, result.trips
    )
