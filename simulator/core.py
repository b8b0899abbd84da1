"""One SUMO simulation of a scenario, advanced one decision step at a time.

:class:`TrafficSimulation` is shared by the Gymnasium and the PettingZoo
environments. It starts SUMO with the scenario, the detectors and (where a
controller asks for one) a SUMO signal program, applies the intersections'
planned signal states at their exact times inside a decision step, and reads
all detectors at the end of each step. When the horizon is reached it closes
SUMO and turns the tripinfo output into per-trip rows and KPIs.
"""

from __future__ import annotations

import heapq
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from networks import DEFAULT_NETWORK, Scenario, get, scratch
from simulator import metrics
from simulator.intersection import Intersection, Layout, ProgramError, layout_of
from simulator.options import SimulationOptions
from simulator.sensors import (
    DetectorReader,
    Readings,
    SensorModel,
    build_detectors,
    write_detectors,
)
from simulator.sumo import Backend, start
from simulator.view import VEHICLE_SPACE_M, SignalView

if TYPE_CHECKING:
    from simulator.programs import ProgramParams

SignalProgram = Literal["static", "actuated", "webster", "coordinated"]
PROGRAMS: tuple[str, ...] = ("static", "actuated", "webster", "coordinated")


@dataclass(frozen=True)
class EpisodeResult:
    """What one finished episode measured."""

    trips: pd.DataFrame
    """One row per vehicle due in the horizon (see :mod:`simulator.metrics`)."""
    kpis: dict[str, float]
    """The headline figures (:data:`simulator.metrics.KPI_NAMES`)."""


def resolve(network: str | Scenario) -> Scenario:
    """A scenario from a registry name or a :class:`~networks.Scenario`."""
    return get(network) if isinstance(network, str) else network


class TrafficSimulation:
    """A scenario in SUMO, with detectors, intersections and decision steps.

    Args:
        network: registry name or scenario.
        options: how the scenario is simulated (default: :class:`SimulationOptions`'
            defaults): decision interval, green bounds, detectors, sensor faults, demand.
        program: ``None`` for external control of every signal, or a SUMO
            program to run instead: ``"static"`` (the network's own),
            ``"actuated"``, ``"webster"`` or ``"coordinated"``.
        program_params: settings of the ``actuated``, ``webster`` or ``coordinated`` program
            (default: :mod:`simulator.programs`' defaults).
        exit_detectors: whether outgoing lanes get detectors (pressure needs them).
        sensor_model: how readings reach the controller, for a model of one's own
            (default: ``options.sensor_model()``).
        backend: ``"libsumo"`` (fast, one per process) or ``"traci"``.
        gui: run sumo-gui (needs ``backend="traci"``).
        isolate: run each episode's libsumo in a fresh child process (the default
            for libsumo). In one process, libsumo's second and later simulations
            can differ from a fresh one with the same seed (measured: max-pressure
            on cologne1, seed 1, gave 38.99 s or 38.66 s mean delay depending on
            the process), so only a fresh process makes a seed's result its own.
    """

    def __init__(
        self,
        network: str | Scenario = DEFAULT_NETWORK,
        options: SimulationOptions | None = None,
        *,
        program: SignalProgram | None = None,
        program_params: ProgramParams | None = None,
        exit_detectors: bool = True,
        sensor_model: SensorModel | None = None,
        backend: Backend = "libsumo",
        gui: bool = False,
        isolate: bool | None = None,
    ) -> None:
        self.scenario = resolve(network)
        self.options = options if options is not None else SimulationOptions()
        self.isolate = backend == "libsumo" if isolate is None else bool(isolate)
        # what a child process needs, besides the options, to build the same simulation
        self._settings: dict[str, Any] = dict(
            program=program, program_params=program_params, exit_detectors=exit_detectors,
            sensor_model=sensor_model, backend=backend, gui=gui, isolate=False,
        )
        self._child: Any = None  # a ChildSimulation while an isolated episode runs
        self._sent: tuple[np.ndarray | None] | None = None  # a step sent, not yet received
        if program is not None and program not in PROGRAMS:
            raise ValueError(f"unknown signal program {program!r}; known: {', '.join(PROGRAMS)}")
        self.decision_interval = float(self.options.decision_interval)
        self.program = program
        self.sensor_model = (
            sensor_model if sensor_model is not None else self.options.sensor_model()
        )
        self.backend: Backend = backend
        self.gui = gui

        net = self.scenario.net
        self.tls_ids = net.tls_ids
        if not self.tls_ids:
            raise ProgramError(f"network {self.scenario.name!r} has no traffic lights to control")
        # a protocol's yellow and all-red apply to the signals greenphase drives; a SUMO
        # program keeps the clearance it is written with (simulator.protocols says why)
        self.layouts: list[Layout] = [
            layout_of(
                net.programs[t], net.links[t],
                min_green=self.options.min_green, max_green=self.options.max_green,
                yellow=self.options.yellow, all_red=self.options.all_red,
            )
            for t in self.tls_ids
        ]
        self.detectors = build_detectors(
            net, self.tls_ids, self.options.detector_length, exits=exit_detectors
        )
        self._reader = DetectorReader(self.detectors, first_wait=self.options.first_wait)
        index = self.detectors.index()
        capacity = np.maximum(self.detectors.lengths / VEHICLE_SPACE_M, 1.0)
        self.views: list[SignalView] = []
        for lay in self.layouts:
            entry = np.array([index[(lane, True)] for lane in lay.incoming_lanes])
            exit_ = np.array(
                [index[(lane, False)] for lane in lay.outgoing_lanes] if exit_detectors else [],
                dtype=int,
            )
            self.views.append(
                SignalView(
                    lay, entry, exit_, capacity[entry], capacity[exit_],
                    self.detectors.speed_limits[entry],
                )
            )
        self._n_entry = int(self.detectors.is_entry.sum())  # entry detectors come first
        self._intersections = [Intersection(lay) for lay in self.layouts]
        # green index of each SUMO phase of the network's programs, for program control
        self._phase_to_green = [
            self._green_of_phases(t, lay) for t, lay in zip(self.tls_ids, self.layouts)
        ]

        self._workdir = scratch.folder("sim")
        self._additional = [write_detectors(self.detectors, net, self._workdir)]
        if program in ("actuated", "webster", "coordinated"):
            self._additional.append(self._write_program(program))
        closures = (self.options.drift.additional(self.scenario, self._workdir)
                    if self.options.drift is not None else None)
        if closures is not None:
            self._additional.append(closures)
        self._conn: Any = None
        self._events: list[tuple[float, int, str]] = []
        self.queue_history: list[float] = []
        self.time = float(self.scenario.begin)
        self.seed: int | None = None
        self.readings: Readings | None = None
        # what the detectors measured, before the sensor model: for rewards and KPIs, which a
        # faulty sensor must not bend
        self.true_readings: Readings | None = None

    # ------------------------------------------------------------------ setup
    def _green_of_phases(self, tls: str, lay: Layout) -> list[int]:
        phases = self.scenario.net.programs[tls].phases
        greens = {s: i for i, s in enumerate(lay.green_states)}
        out, last = [], 0
        # walk the cycle twice so that leading clearance phases map to the last green
        for phase in list(phases) * 2:
            last = greens.get(phase.state, last)
            out.append(last)
        return out[len(phases):]

    def _write_program(self, program: str) -> Path:
        from simulator import programs

        # under a drift, a plan is timed on the base period's demand, as it was before the drift
        drift = self.options.drift
        designed = drift.base_of(self.scenario) if drift is not None else self.scenario
        plans = programs.plans_for(program, designed, self._settings["program_params"],
                                   self.options)
        path = self._workdir / f"{program}.add.xml"
        programs.write_additional(plans.values(), path)
        return path

    def program_id(self) -> str | None:
        """The SUMO programID switched on at start, or None under external control."""
        if self.program is None:
            return None
        return {"static": None, "actuated": "greenphase-actuated", "webster": "greenphase-webster",
                "coordinated": "greenphase-coordinated"}[self.program]

    def route_files(self, seed: int) -> tuple[Path, ...]:
        """The route files of an episode with SUMO seed ``seed``, which is its demand seed.

        The scenario's own, or under ``resample`` the draw of its demand for ``seed``.
        """
        if self.options.drift is not None:  # the long horizon of networks.drift_demand
            return self.options.drift.route_files(self.scenario, seed, self.options.demand)
        return self.options.demand.route_files(self.scenario, seed)

    def sumo_command(self, seed: int) -> list[str]:
        """SUMO's command-line arguments for an episode (without the binary)."""
        sc = self.scenario
        return [
            "-n", str(sc.net_file),
            "-r", ",".join(str(r) for r in self.route_files(seed)),
            "-a", ",".join(str(a) for a in self._additional),
            "-b", str(sc.begin),
            "-e", str(sc.end),
            "--seed", str(seed),
            "--time-to-teleport", format(self.options.time_to_teleport, "g"),
            "--tripinfo-output", str(self._workdir / "tripinfo.xml"),
            *metrics.TRIPINFO_OPTIONS,
            "--no-step-log", "true",
            "--no-warnings", "true",
            "--duration-log.disable", "true",
            *self.options.sumo_arguments(),
        ]

    # ---------------------------------------------------------------- episode
    def start(self, seed: int) -> Readings:
        """Start an episode with SUMO's random seed ``seed``; return the first reading."""
        self.close_sumo()
        self.seed = int(seed)
        self.time = float(self.scenario.begin)
        self.queue_history = []
        if self.isolate:
            from simulator.isolation import ChildSimulation

            self.route_files(self.seed)  # drawn here, so that the child only reads it
            # the child reports raw readings; this process's sensor model turns them
            # into what the controller sees, so the model's state stays here
            self._child = ChildSimulation(
                self.scenario, self.options, {**self._settings, "sensor_model": SensorModel()}
            )
            # under a SUMO program actions are ignored, so the child may run ahead
            self._child.send("stream" if self.program is not None else "start", self.seed)
            self.sensor_model.reset(self.detectors, self.seed)
            return self._mirror(self._child.next_state())
        self._conn = start(self.sumo_command(self.seed), self.backend, gui=self.gui)
        self._reader.subscribe(self._conn, direct=self.backend == "libsumo")
        self.time = float(self.scenario.begin)
        self._events = []
        self.queue_history = []
        tl = self._conn.trafficlight
        program_id = self.program_id()
        for i, (tls, inter) in enumerate(zip(self.tls_ids, self._intersections)):
            if self.program is None:
                for when, state in inter.reset(self.time):
                    heapq.heappush(self._events, (when, i, state))
            else:
                if program_id is not None:
                    tl.setProgram(tls, program_id)
                inter.green, inter.green_since = 0, self.time
        self._apply_due(self.time)
        self._conn.simulationStep(self.time)
        self.sensor_model.reset(self.detectors, self.seed)
        return self._read()

    @property
    def connection(self) -> Any:
        """The running SUMO (libsumo module or TraCI connection), or None between episodes.

        For observers outside the control loop, such as GUI screenshots; controllers never
        see it, and whoever uses it must not change the simulation.
        """
        return self._conn

    @property
    def done(self) -> bool:
        """Whether the horizon has been reached."""
        return self.time >= self.scenario.end

    def step(self, phases: Sequence[int] | np.ndarray | None) -> Readings:
        """Advance one decision step; ``phases`` is the wished-for green of each signal.

        Under a SUMO program (``program`` set) ``phases`` is ignored and may be None.
        """
        self.send(phases)
        return self.receive()

    def send(self, phases: Sequence[int] | np.ndarray | None) -> None:
        """Begin :meth:`step`, finished by :meth:`receive`.

        An isolated episode's child simulates the step while this process goes on; in
        process, the step waits for :meth:`receive`.
        """
        if self._conn is None and self._child is None:
            raise RuntimeError("the simulation is not running: call start() first")
        if self.done:
            raise RuntimeError("the episode has ended: call start() for a new one")
        if self._sent is not None:
            raise RuntimeError("a step is under way: receive() it first")
        checked = self._checked(phases) if self.program is None else None
        if self._child is not None and checked is not None:
            self._child.send_phases(checked)
        self._sent = (checked,)

    def receive(self) -> Readings:
        """The readings after the step :meth:`send` began."""
        if self._sent is None:
            raise RuntimeError("no step under way: send() one first")
        (checked,), self._sent = self._sent, None
        if self._child is not None:
            return self._mirror(self._child.next_state())
        return self.advance(checked)

    def advance(self, phases: np.ndarray | None) -> Readings:
        """:meth:`step` with greens already checked (None under a program).

        For the child process of an isolated episode, whose parent checked them.
        """
        now = self.time
        if phases is not None:
            for i, (inter, phase) in enumerate(zip(self._intersections, phases)):
                for when, state in inter.decide(int(phase), now):
                    heapq.heappush(self._events, (when, i, state))
        until = min(now + self.decision_interval, float(self.scenario.end))
        self._apply_due(now)
        while self._events and self._events[0][0] < until:
            when = self._events[0][0]
            self._conn.simulationStep(when)
            self._apply_due(when)
        self._conn.simulationStep(until)
        self.time = until
        if self.program is not None:
            self._track_program_phases()
        return self._read()

    def _checked(self, phases: Sequence[int] | np.ndarray | None) -> np.ndarray:
        """The wished-for greens as integers, each checked before any is applied."""
        if phases is None or len(phases) != len(self._intersections):
            raise ValueError(f"expected {len(self._intersections)} phases, got {phases!r}")
        checked = np.asarray(phases).astype(np.int64)
        for lay, phase in zip(self.layouts, checked):
            if not 0 <= phase < lay.num_phases:
                raise ValueError(
                    f"signal {lay.tls_id!r}: phase {phase} not in 0..{lay.num_phases - 1}"
                )
        return checked

    def _apply_due(self, now: float) -> None:
        tl = self._conn.trafficlight
        while self._events and self._events[0][0] <= now:
            _, i, state = heapq.heappop(self._events)
            tl.setRedYellowGreenState(self.tls_ids[i], state)

    def _track_program_phases(self) -> None:
        tl = self._conn.trafficlight
        for tls, inter, table in zip(self.tls_ids, self._intersections, self._phase_to_green):
            green = table[tl.getPhase(tls) % len(table)]
            if green != inter.green:
                inter.green, inter.green_since = green, self.time

    def pack_state(self, readings: Readings) -> np.ndarray:
        """What a parent process needs to mirror this simulation after a step, as one array.

        The queue total, each signal's green and since when it shows, then the
        reading (:meth:`Readings.pack`, which begins with the time).
        """
        greens = [(inter.green, inter.green_since) for inter in self._intersections]
        return np.concatenate(([self.queue_history[-1]], np.ravel(greens), readings.pack()))

    def _mirror(self, state: np.ndarray) -> Readings:
        """Take on a child simulation's state after a step (see :meth:`pack_state`)."""
        n = len(self._intersections)
        greens = state[1 : 1 + 2 * n]
        readings = Readings.unpack(state[1 + 2 * n :])
        self.time = readings.time
        self.queue_history.append(float(state[0]))
        for inter, green, since in zip(self._intersections, greens[0::2], greens[1::2]):
            inter.green, inter.green_since = int(green), float(since)
        for view, inter in zip(self.views, self._intersections):
            view.green = inter.green
            view.time_in_phase = inter.time_in_phase(self.time)
        self.true_readings = readings
        self.readings = self.sensor_model.observe(readings)
        return self.readings

    def _read(self) -> Readings:
        raw = self._reader.read(self._conn, self.time)
        self.queue_history.append(float(raw.queue[: self._n_entry].sum()))
        self.true_readings = raw
        readings = self.sensor_model.observe(raw)
        for view, inter in zip(self.views, self._intersections):
            view.green = inter.green
            view.time_in_phase = inter.time_in_phase(self.time)
        self.readings = readings
        return readings

    def run(
        self,
        controller: Any,
        seed: int,
        on_step: Callable[[float], None] | None = None,
        observer: Callable[[TrafficSimulation], None] | None = None,
    ) -> EpisodeResult:
        """A whole episode under ``controller`` (an :class:`agents.Controller`).

        Isolated, the episode runs in the child process, controller included,
        so a step costs no exchange between processes. ``on_step`` gets the
        simulated time after each decision step; ``observer`` (in-process
        simulations only, e.g. the GUI) gets the running simulation once it has
        started and after each step, to read SUMO but not to change it.
        """
        if self.isolate and observer is not None:
            raise ValueError("an observer needs the simulation in this process (isolate=False)")
        if self.isolate:
            from simulator.isolation import ChildSimulation

            self.close_sumo()
            self.route_files(int(seed))  # drawn here, so that the child only reads it
            child = ChildSimulation(self.scenario, self.options, self._settings)
            try:
                child.send("run", (controller, int(seed)))
                result: EpisodeResult = child.receive(on_step)
            finally:
                child.stop()
            return result
        readings = self.start(seed)
        controller.reset(self.views, seed)
        if observer is not None:
            observer(self)
        while not self.done:
            phases = None
            if controller.program is None:
                phases = controller.act(self.views, readings, self.decision_interval)
            readings = self.step(phases)
            if on_step is not None:
                on_step(self.time)
            if observer is not None:
                observer(self)
        return self.finish()

    def finish(self) -> EpisodeResult:
        """Close SUMO (which writes the tripinfo output) and measure the episode."""
        if self._child is not None:
            child, self._child = self._child, None
            result: EpisodeResult = child.call("finish")
            child.stop()
            return result
        self.close_sumo()
        trips = metrics.read_tripinfo(self._workdir / "tripinfo.xml")
        kpis = metrics.kpis(trips, self.scenario.horizon_s, self.queue_history)
        return EpisodeResult(trips, kpis)

    def close_sumo(self) -> None:
        """Stop the running SUMO, if any."""
        self._sent = None
        if self._child is not None:
            child, self._child = self._child, None
            child.stop()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    def close(self) -> None:
        """Stop SUMO and remove the temporary files."""
        self.close_sumo()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown; nothing left to report to
            pass
