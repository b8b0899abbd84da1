"""Running controllers on scenarios: one episode per (network, controller, seed)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from agents import Controller, make_controller
from networks import Scenario
from simulator import TrafficSimulation, isolation
from simulator.options import SimulationOptions
from simulator.sumo import Backend

# a run's controller works in the simulation's child process: start those with the
# controllers' code (and torch, for a learned policy) already imported
isolation.preload("agents", "torch", "agents.trained")


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
    options: SimulationOptions | None = None,
    *,
    on_step: Callable[[float], None] | None = None,
    observer: Callable[[TrafficSimulation], None] | None = None,
    backend: Backend = "libsumo",
    gui: bool = False,
) -> RunResult:
    """Run one controller over the scenario's horizon with SUMO seed ``seed``.

    ``options`` says how the scenario is simulated (default: the defaults);
    ``on_step`` is called with the simulated time after each decision step;
    ``observer`` with the running simulation once it has started and after each
    decision step (it may read SUMO, e.g. take GUI screenshots, but not change it);
    ``backend`` and ``gui`` choose how SUMO runs (the GUI needs TraCI).
    """
    if isinstance(controller, str):
        ctrl = make_controller(controller, network=scenario.name)
    else:
        ctrl = controller
    started = time.perf_counter()
    sim = TrafficSimulation(
        scenario,
        options,
        program=ctrl.program,  # type: ignore[arg-type]
        program_params=ctrl.program_params,
        exit_detectors=ctrl.needs_exits,
        backend=backend,
        gui=gui,
    )
    try:
        result = sim.run(ctrl, seed, on_step, observer)
    finally:
        sim.close()
    return RunResult(
        scenario.name, ctrl.name, seed, result.kpis, time.perf_counter() - started, result.trips
    )
