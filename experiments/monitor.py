"""``greenphase monitor``: a controller on a (drifting) scenario, watched window by window.

Each seed's episode runs in this process decision step by decision step, as
:meth:`simulator.TrafficSimulation.run` runs it (same seeds, same options), while the
readings the controller sees are kept. Per window (default 5 simulated minutes):

- ``delay_s``: mean delay of the vehicles that *arrived* in the window (known when the
  window ends). Vehicles still running or never inserted at the end have no arrival;
  they are not in any window's delay but counted, with their delay so far, in each
  seed's summary (``unfinished``, ``not_inserted``, ``unfinished_delay_s``);
- ``queue_veh``: mean halting vehicles on the controlled incoming lanes over the
  window's decision steps (the simulation's ``queue_history``, true readings);
- ``throughput_veh_h``: arrivals in the window per hour;
- ``volume_veh``: mean vehicles on all detectors (the sum of their ``count`` readings as
  the controller sees them), the traffic the detectors report;
- ``drift_score``: :func:`experiments.driftstats.drift_score` of the per-feature PSI of
  the window's readings against the reference (``drift_mean``: their mean).

The reference (:func:`build_reference`) is the same controller on the stationary base
scenario, repeated, on tuning seeds. Page-Hinkley tests
(:class:`experiments.driftstats.Detectors`) on each series of
:data:`experiments.driftstats.SERIES`, standardised against the reference's same window of
the period, raise the alarms. An alarm at or before the scenario's first change point (on a
stationary scenario, any alarm) is a false alarm.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agents import make_controller
from experiments import driftstats, layout, results
from experiments.driftstats import DETECTED, SERIES, Reference, Verdict, judge
from networks import Scenario
from networks.drift import Drift
from simulator import TrafficSimulation
from simulator.options import SimulationOptions

REFERENCE_SEEDS = (10_000, 10_001)
"""Tuning seeds of the reference episodes monitor runs when a controller brings none."""
WINDOW_S = 300.0
"""Monitor's window by default (``--window-min 5``), in seconds."""
REFERENCE_PERIODS = 3
"""Base periods of a reference episode; the first (the network filling up) is left out."""
REFERENCE_FILE = "reference.json"
"""The reference's file name, in a trained run and in monitor's output folder."""
FILES = ("monitor.parquet", "alarms.csv", "monitor.json", "monitor.png")
"""What monitor writes into its folder (besides ``manifest.json`` and the reference)."""


@dataclass(frozen=True)
class Episode:
    """One monitored episode: its trips, the time, queue and readings of each step."""

    trips: pd.DataFrame
    kpis: dict[str, float]
    times: np.ndarray
    """Seconds after the scenario's begin of each reading (the first at 0)."""
    queue: np.ndarray
    samples: np.ndarray
    """The readings the controller saw, one row per reading, one column per feature."""
    names: list[str]
    begin: float
    """The scenario's begin: trips' times are absolute, :attr:`times` from it."""


def observe(scenario: Scenario, controller: str, seed: int, options: SimulationOptions,
            on_step: Callable[[float], None] | None = None) -> Episode:
    """Run ``controller`` over ``scenario`` with seed ``seed``, keeping every reading."""
    ctrl = make_controller(controller, network=scenario.name)
    if "torch" in sys.modules:  # a learned policy decides on one thread, as in a run's child
        sys.modules["torch"].set_num_threads(1)  # process (simulator.isolation says why)
    sim = TrafficSimulation(scenario, options, program=ctrl.program,  # type: ignore[arg-type]
                            program_params=ctrl.program_params, exit_detectors=ctrl.needs_exits)
    try:
        readings = sim.start(seed)
        ctrl.reset(sim.views, seed)
        times, rows = [sim.time], [driftstats.features(readings)]
        while not sim.done:
            phases = None
            if ctrl.program is None:
                phases = ctrl.act(sim.views, readings, sim.decision_interval)
            readings = sim.step(phases)
            times.append(sim.time)
            rows.append(driftstats.features(readings))
            if on_step is not None:
                on_step(sim.time)
        result = sim.finish()
        queue = np.asarray(sim.queue_history, dtype=float)
        names = driftstats.feature_names(sim.detectors.ids)
    finally:
        sim.close()
    return Episode(result.trips, result.kpis, np.asarray(times) - scenario.begin, queue,
                   np.vstack(rows), names, float(scenario.begin))


def window_of(times: np.ndarray, window_s: float, count: int) -> np.ndarray:
    """Each time's window: ``(k*W, (k+1)*W]``, the start (time 0) in the first."""
    return np.clip(np.ceil(times / window_s).astype(int) - 1, 0, count - 1)


def window_kpis(episode: Episode, horizon_s: float, window_s: float) -> pd.DataFrame:
    """Delay, queue and throughput per window (see the module's docstring)."""
    count = max(1, math.ceil(horizon_s / window_s - 1e-9))
    starts = np.arange(count) * window_s
    ends = np.minimum(starts + window_s, horizon_s)
    trips = episode.trips[episode.trips["arrived"]]
    arrival = trips["arrival_s"].to_numpy(float) - episode.begin
    index = np.clip(arrival // window_s, 0, count - 1).astype(int)
    delay = pd.Series(trips["delay_s"].to_numpy(float)).groupby(index)
    arrived = np.bincount(index, minlength=count)
    steps = window_of(episode.times, window_s, count)
    queue = pd.Series(episode.queue).groupby(steps).mean()
    counts = [j for j, name in enumerate(episode.names) if name.endswith(":count")]
    volume = pd.Series(np.nansum(episode.samples[:, counts], axis=1)).groupby(steps).mean()
    return pd.DataFrame({
        "window": np.arange(count), "start_s": starts, "end_s": ends,
        "delay_s": delay.mean().reindex(range(count)).to_numpy(float),
        "arrived": arrived,
        "queue_veh": queue.reindex(range(count)).to_numpy(float),
        "throughput_veh_h": arrived * 3600.0 / (ends - starts),
        "volume_veh": volume.reindex(range(count)).to_numpy(float),
    })


def window_drift(episode: Episode, reference: Reference, frame: pd.DataFrame,
                 window_s: float) -> pd.DataFrame:
    """``frame`` with each window's drift score and mean PSI against ``reference``."""
    steps = window_of(episode.times, window_s, len(frame))
    scores, means = [], []
    for w in range(len(frame)):
        per_feature = reference.window_psi(episode.names, episode.samples[steps == w])
        scores.append(driftstats.drift_score(per_feature))
        finite = per_feature[np.isfinite(per_feature)]
        means.append(float(finite.mean()) if finite.size else math.nan)
    return frame.assign(drift_score=scores, drift_mean=means)


def standardised(frame: pd.DataFrame, reference: Reference) -> dict[str, list[float]]:
    """The detected series of a seed's windows in reference deviations.

    Each window is set against the same window of the reference's period
    (:meth:`Reference.standardise`).
    """
    period = float(reference.source.get("period_s", 0))
    width = float(reference.source.get("window_s", 0)) or float(frame["end_s"].iloc[0])
    positions = [int((start % period) // width) if period > 0 else 0
                 for start in frame["start_s"]]
    return {name: [reference.standardise(name, float(v), p)
                   for v, p in zip(frame[column], positions, strict=True)]
            for name, column in SERIES.items()}


def build_reference(base: Scenario, controller: str, options: SimulationOptions,
                    seeds: Sequence[int] = REFERENCE_SEEDS, window_s: float = WINDOW_S,
                    periods: int = REFERENCE_PERIODS) -> Reference:
    """The reference of ``controller`` on ``base`` repeated, stationary, one episode per seed.

    Each episode runs ``periods`` base periods (:mod:`networks.drift`, no change); the
    first, which starts from an empty network, is left out, so the reference is the
    traffic as it is once the network is loaded.
    """
    drift = Drift.parse("", hours=periods * base.horizon_s / 3600.0).check(base)
    long, stationary = drift.scenario(base), options.model_copy(update={"drift": drift})
    period = float(base.horizon_s)
    samples, groups, frames = [], [], []  # type: ignore[var-annotated]
    for seed in seeds:
        episode = observe(long, controller, seed, stationary)
        frame = window_kpis(episode, long.horizon_s, window_s)
        kept = frame["start_s"].to_numpy() >= period
        steps = window_of(episode.times, window_s, len(frame))
        loaded = kept[steps] & (episode.times > period)
        # one row of windows per loaded period of each seed
        groups.append(steps[loaded] - int(kept.argmax()) + len(frames) * int(kept.sum()))
        samples.append(episode.samples[loaded])
        frames.append(frame[kept])
        names = episode.names
    count = math.ceil(period / window_s - 1e-9)
    rows = len(frames) * (periods - 1)
    kpis = {name: np.vstack([f[column].to_numpy(float) for f in frames]).reshape(rows, count)
            for name, column in SERIES.items() if name != "drift"}
    source = {"controller": controller, "network": base.name, "seeds": list(seeds),
              "begin_s": base.begin, "period_s": period, "periods": periods,
              "window_s": window_s, "options": results.plain(options.model_dump())}
    return driftstats.summarise(names, np.vstack(samples), np.concatenate(groups), kpis,
                                source)


def write_reference(folder: Path, reference: Reference) -> Path:
    """Write ``reference.json`` into ``folder``."""
    return results.write_json(Path(folder) / REFERENCE_FILE, reference.to_json())


def read_reference(path: Path) -> Reference:
    """A ``reference.json`` read back.

    Raises:
        experiments.results.DamagedFileError: It is no reference.
    """
    doc = results.read_json(path)
    try:
        return Reference.from_json(doc)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise results.DamagedFileError({path: f"not a reference ({err})"}) from None


@dataclass
class SeedResult:
    """One seed's windows and alarms."""

    seed: int
    windows: pd.DataFrame
    alarms: list[dict[str, Any]]
    ends: dict[str, float]
    """Vehicles without an arrival at the end: unfinished, not inserted, their delay so far."""
    wall_s: float = 0.0


def monitor_seed(scenario: Scenario, controller: str, seed: int, options: SimulationOptions,
                 reference: Reference, window_s: float,
                 thresholds: dict[str, float] | None = None,
                 on_step: Callable[[float], None] | None = None) -> SeedResult:
    """One seed monitored: its windows (KPIs, drift, alarm flags) and alarms."""
    started = time.perf_counter()
    episode = observe(scenario, controller, seed, options, on_step)
    frame = window_drift(episode, reference,
                         window_kpis(episode, scenario.horizon_s, window_s), window_s)
    return finish_seed(seed, frame, episode.trips, reference, thresholds,
                       time.perf_counter() - started)


def finish_seed(seed: int, frame: pd.DataFrame, trips: pd.DataFrame, reference: Reference,
                thresholds: dict[str, float] | None, wall_s: float) -> SeedResult:
    """The alarms of a seed's windows, and what is left at the end."""
    series = standardised(frame, reference)
    detectors = driftstats.Detectors(thresholds)
    alarms, flags = [], {name: [] for name in DETECTED}  # type: ignore[var-annotated]
    for i, (start, end) in enumerate(zip(frame["start_s"], frame["end_s"], strict=True)):
        fired = detectors.update({name: series[name][i] for name in DETECTED}
                                 if start >= driftstats.WARMUP_S else {})
        for name in DETECTED:
            flags[name].append(fired[name])
            if fired[name]:
                alarms.append({"seed": seed, "time_s": float(end), "detector": name,
                               "statistic": detectors.statistic(name),
                               "value": series[name][i]})
    frame = frame.assign(seed=seed, **{f"{n}_z": series[n] for n in DETECTED},
                         **{f"alarm_{n}": flags[n] for n in DETECTED})
    running = trips[trips["inserted"] & ~trips["arrived"]]
    ends = {"unfinished": int(len(running)),
            "not_inserted": int((~trips["inserted"]).sum()),
            "unfinished_delay_s": float(running["delay_s"].mean()) if len(running) else math.nan}
    return SeedResult(seed, frame, alarms, ends, wall_s)


# ------------------------------------------------------------------ the command's work
@dataclass(frozen=True)
class MonitorPlan:
    """A checked ``greenphase monitor``: what runs, on what, and where it is written."""

    base: Scenario
    """The stationary scenario (one base period): the reference runs on it."""
    scenario: Scenario
    """The monitored scenario (the drift's horizon)."""
    controller: str
    seeds: list[int]
    base_options: SimulationOptions
    """The options of a normal run (the reference's)."""
    options: SimulationOptions
    """:attr:`base_options` with the drift."""
    window_s: float
    folder: Path
    drift: str = ""
    change_points: list[tuple[float, str]] = field(default_factory=list)
    overwrite: bool = False


def monitor_options(base: Scenario, controller: str, demand: str) -> SimulationOptions:
    """The options ``compare`` (``evaluate`` for ``trained:RUN``) runs ``controller`` with.

    Raises:
        UnknownControllerError: ``controller`` is not known.
        TrainedPolicyError: A trained run of another network.
        BadInput: A bad ``--demand``.
    """
    from experiments.options import demand_option, simulation_options
    from experiments.workflows import COMPARE_DEMAND

    ctrl = make_controller(controller, network=base.name)
    interval = None
    if controller.startswith("trained:"):
        from agents.policy import check_signals, policy_options

        policy = getattr(ctrl, "policy", {})
        check_signals(policy, base.name, base.net.tls_ids, controller)
        interval = policy_options(policy).decision_interval
    return simulation_options("greenphase", base.name, decision_interval=interval,
                              demand=demand_option(demand, COMPARE_DEMAND))


def plan_monitor(base: Scenario, scenario: Scenario, controller: str, *, seeds: int,
                 base_options: SimulationOptions, options: SimulationOptions,
                 window_min: float, out: Path | None, drift: str = "",
                 change_points: Sequence[tuple[float, str]] = (),
                 overwrite: bool = False) -> MonitorPlan:
    """Check a monitoring run: its window and its results folder.

    Raises:
        BadInput: A window longer than the base period.
        OutputError: The folder holds other results, or monitor's without ``overwrite``.
    """
    from experiments.options import BadInput, default_folder

    window_s = float(window_min) * 60.0
    if not 0 < window_s <= base.horizon_s or base.horizon_s % window_s:
        raise BadInput(f"--window-min: must divide the base period ({base.horizon_s / 60:g} "
                       f"min) into whole windows, got {window_min:g}")
    folder = Path(out) if out is not None else layout.fresh(default_folder("monitor",
                                                                          base.name))
    claim(folder, overwrite=overwrite)
    results.ensure_writable(folder)
    return MonitorPlan(base, scenario, controller, list(range(seeds)), base_options, options,
                       window_s, folder, drift, list(change_points), overwrite)


def claim(folder: Path, *, overwrite: bool) -> Path:
    """:func:`experiments.layout.claim` for kind ``monitor``, which it does not know results of.

    Raises:
        OutputError: The folder holds other results, or monitor's without ``overwrite``.
    """
    layout.claim(folder, "monitor", overwrite=overwrite)
    if not overwrite and any((folder / name).exists() for name in (*FILES, layout.MANIFEST)):
        raise results.OutputError(f"{folder} already holds the runs of `greenphase monitor`: "
                                  "use --overwrite to replace them, or give another --out")
    return folder


def reference_for(plan: MonitorPlan) -> tuple[Reference, str]:
    """The reference of the plan's controller, and where it came from.

    A trained run's ``reference.json`` (written by ``train``) when it fits the network and
    the window; else one built here from :data:`REFERENCE_SEEDS`.
    """
    if plan.controller.startswith("trained:"):
        run = Path(plan.controller.removeprefix("trained:"))
        path = (run.parent.parent if run.is_file() else run) / REFERENCE_FILE
        if path.is_file():
            reference = read_reference(path)
            if (reference.source.get("network") == plan.base.name
                    and float(reference.source.get("window_s", 0)) == plan.window_s):
                return reference, str(path)
    reference = build_reference(plan.base, plan.controller, plan.base_options,
                                window_s=plan.window_s)
    return reference, f"built by monitor on tuning seeds {list(REFERENCE_SEEDS)}"


@dataclass(frozen=True)
class MonitorResult:
    """A finished monitoring run."""

    plan: MonitorPlan
    reference_source: str
    seeds: list[SeedResult]
    verdict: Verdict
    wall_s: float

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document (and ``monitor.json``)."""
        plan, verdict = self.plan, self.verdict
        return results.plain({
            "command": "monitor", "network": plan.base.name, "controller": plan.controller,
            "drift": plan.drift, "begin_s": plan.scenario.begin, "end_s": plan.scenario.end,
            "hours": plan.scenario.horizon_s / 3600.0, "seeds": plan.seeds,
            "window_s": plan.window_s, "demand": plan.base_options.demand,
            "reference": self.reference_source,
            "detectors": {"kind": "river.drift.PageHinkley", "mode": "up",
                          "delta": driftstats.DELTA, "min_windows": driftstats.MIN_WINDOWS,
                          "thresholds": driftstats.THRESHOLDS,
                          "series": {"delay": "delay_s", "queue": "queue_veh",
                                     "drift": "drift_score"}},
            "change_points": [{"at_s": at, "change": label} for at, label in plan.change_points],
            "summary": {"alarms": sum(len(s.alarms) for s in self.seeds),
                        "false_alarms": verdict.false_alarms,
                        "simulated_hours": verdict.hours,
                        "false_alarms_per_10h": (10.0 * verdict.false_alarms / verdict.hours
                                                 if verdict.hours else None),
                        "detected_within_15min": verdict.detected_within,
                        "per_seed": verdict.per_seed},
            "folder": str(plan.folder), "wall_s": self.wall_s,
        })


def run_monitor(plan: MonitorPlan,
                on_step: Callable[[str, int, float], None] | None = None) -> MonitorResult:
    """Build or read the reference, monitor every seed, write the results folder."""
    started = time.perf_counter()
    reference, source = reference_for(plan)
    seeds = []
    for seed in plan.seeds:
        step = (lambda t, s=seed: on_step(plan.controller, s, t)) if on_step else None
        seeds.append(monitor_seed(plan.scenario, plan.controller, seed, plan.options,
                                  reference, plan.window_s, on_step=step))
    verdict = judge(seeds, plan.change_points, plan.scenario.horizon_s)
    result = MonitorResult(plan, source, seeds, verdict, time.perf_counter() - started)
    write(result, reference)
    return result


def write(result: MonitorResult, reference: Reference) -> Path:
    """Write the results folder: manifest, reference, windows, alarms, summary, plot."""
    from experiments.monitor_plot import plot

    folder = result.plan.folder
    folder.mkdir(parents=True, exist_ok=True)
    results.write_json(folder / layout.MANIFEST, {
        "layout": layout.LAYOUT_VERSION, "kind": "monitor", "name": folder.name,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "runs": []})
    write_reference(folder, reference)
    windows = pd.concat([s.windows for s in result.seeds], ignore_index=True)
    results.write_parquet(folder / "monitor.parquet", windows)
    alarms = pd.DataFrame([a for s in result.seeds for a in s.alarms],
                          columns=["seed", "time_s", "detector", "statistic", "value"])
    results.write_text(folder / "alarms.csv", alarms.to_csv(index=False))
    results.write_json(folder / "monitor.json", result.to_json())
    first = result.seeds[0]
    plot(first.windows, first.alarms, result.plan.change_points,
         f"{result.plan.base.name}, {result.plan.controller}, seed {first.seed}"
         + (f": {result.plan.drift}" if result.plan.drift else ": stationary"),
         folder / "monitor.png")
    return folder


def default_network(controller: str) -> str | None:
    """The network a ``trained:RUN`` was trained on (None for any other controller)."""
    if not controller.startswith("trained:"):
        return None
    from agents.trained import load_policy

    _, policy = load_policy(Path(controller.removeprefix("trained:")))
    network = policy.get("network")
    return str(network) if network is not None else None


def write_trained_reference(run: Path, scenario: Scenario, options: SimulationOptions,
                            seed: int) -> Path | None:
    """A training run's ``reference.json``: what its policy's detectors report, stationary.

    Greedy episodes of the policy ``trained:RUN`` deploys, on the training scenario with
    the run's own options, seeds ``seed``, ``seed + 1``, ... (the tuning seed of its
    evaluations onwards). None when the run holds no policy.
    """
    if not any((run / "checkpoints" / name).is_file() for name in ("best.pt", "last.pt")):
        return None
    seeds = [seed + i for i in range(len(REFERENCE_SEEDS))]
    # monitor's default window where it divides the period, else one window per period
    window_s = WINDOW_S if scenario.horizon_s % WINDOW_S == 0 else float(scenario.horizon_s)
    return write_reference(run, build_reference(scenario, f"trained:{run}", options, seeds,
                                                window_s))
