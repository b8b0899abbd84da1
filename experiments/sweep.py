"""Sweeps: every run unit of a spec on a local process pool or a Ray cluster, stored as it ends.

A run unit (:class:`~experiments.spec.RunUnit`) runs in a worker process
(:func:`run_unit`): a classic controller is one episode of
:func:`experiments.runner.run_episode`; a learned one (``dqn``, ``ppo``) is trained
with learner seed ``seed`` into ``DIR/training/<hash>/`` and then evaluated on SUMO
seed ``seed``, which training never sees. libsumo holds one simulation per process,
and every episode already runs in a fresh process forked from greenphase's clean
simulation server, so a run's metrics depend on its spec and seed only: the same on
one worker or many, locally or on Ray.

The parent process is the only writer of the store (:mod:`experiments.store`): each
finished run is written at once and atomically, so ``--resume`` skips exactly the runs
that finished. A run that fails (SUMO dies, an exception, a killed worker) is recorded
as a failed attempt with its error and retried up to ``retries`` times; the rest of the
sweep goes on.

Backends:

- ``local``: a :class:`concurrent.futures.ProcessPoolExecutor` of spawned workers. A
  killed worker breaks the pool: the runs in flight are recorded as failed, the pool is
  rebuilt, and those runs are retried one at a time, so the run that kills its worker
  is the only one that keeps failing.
- ``ray``: the same runs as Ray tasks (``pip install 'greenphase[ray]'``), on a local
  Ray or a cluster at ``address``. Every node needs greenphase installed; learned
  controllers also need ``DIR`` on a filesystem the nodes share (their training runs).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import math
import multiprocessing
import os
import resource
import shutil
import socket
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments import results, spec, store
from experiments.spec import RunUnit, Sweep
from simulator.metrics import KPI_NAMES

BACKENDS = ("local", "ray")
"""Where runs execute."""
DEFAULT_RETRIES = 2
"""Retries of a failed run (so up to three attempts) in one invocation."""
DELAY_BINS = 12
"""Bins of the delay-over-time series over a run's horizon."""
RAY_MISSING = "the ray backend needs: pip install 'greenphase[ray]'"

OnStart = Callable[[int, int], None]
"""Called with (runs in the plan, runs already finished) before the first run starts."""
OnResult = Callable[[RunUnit, dict[str, Any], bool], None]
"""Called with each attempt's unit, store row and whether it will be retried."""


class SweepError(ValueError):
    """A sweep that cannot start (bad options, a store in the way, no ray); one line."""


# ------------------------------------------------------------------ in the worker
@dataclass
class Outcome:
    """What a worker reports about one attempt at a run."""

    status: str
    """``ok`` or ``failed``."""
    started: str
    """UTC time the attempt started (ISO 8601)."""
    finished: str = ""
    """UTC time it ended."""
    error: str = ""
    """Why it failed: the exception's type and first line."""
    retry: bool = True
    """Whether trying again could help (a diverged training would diverge again)."""
    kpis: dict[str, float] = field(default_factory=dict)
    """The metrics of :data:`simulator.metrics.KPI_NAMES`."""
    wall_s: float = math.nan
    """Wall time of the attempt in the worker."""
    worker_pid: int = 0
    """The worker's process id (0: not known, e.g. the worker died)."""
    host: str = ""
    """The worker's host name."""
    worker_rss_mb: float = math.nan
    """The worker's peak resident memory so far, in MiB."""
    delay_over_time: str = ""
    """JSON: mean delay of trips binned by scheduled departure (see :func:`delay_over_time`)."""
    trips: pd.DataFrame | None = None
    """Per-trip rows, when the spec keeps them."""
    curves: pd.DataFrame | None = None
    """A learned controller's training curve (episode rows)."""


class _TrainingStopped(RuntimeError):
    """Training diverged: trying again would diverge again."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB.

    Linux's ``VmHWM`` where there is one: unlike ``ru_maxrss``, which a spawned process
    inherits across ``exec`` from its parent, it counts this program's own pages only.
    """
    for line in _proc_status():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _proc_status() -> list[str]:
    try:
        return Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return []


def delay_over_time(trips: pd.DataFrame, begin: float, end: float,
                    bins: int = DELAY_BINS) -> dict[str, Any]:
    """Mean delay of the trips binned by scheduled departure over the horizon.

    A trip's scheduled departure is its departure less its depart delay (for a vehicle
    never inserted, the end less its depart delay, as SUMO charges it to the end).

    Returns:
        ``{"begin": s, "bin_s": s, "bins": [[start_s_from_begin, mean_delay_s, trips], ...]}``
        with empty bins left out.
    """
    horizon = max(float(end - begin), 1.0)
    bin_s = max(60.0, math.ceil(horizon / bins / 60.0) * 60.0)
    if trips.empty:
        return {"begin": begin, "bin_s": bin_s, "bins": []}
    depart = trips["depart_s"].to_numpy(float)
    delay_in = trips["depart_delay_s"].to_numpy(float)
    scheduled = np.where(trips["inserted"].to_numpy(bool), depart, float(end)) - delay_in
    index = np.clip(((scheduled - begin) // bin_s).astype(int), 0, math.ceil(horizon / bin_s) - 1)
    frame = pd.DataFrame({"bin": index, "delay": trips["delay_s"].to_numpy(float)})
    grouped = frame.groupby("bin")["delay"].agg(["mean", "size"])
    return {"begin": begin, "bin_s": bin_s,
            "bins": [[float(b * bin_s), float(m), int(n)]
                     for b, (m, n) in zip(grouped.index, grouped.to_numpy())]}


def _sim_options(unit: RunUnit) -> dict[str, Any]:
    exp = unit.experiment
    options: dict[str, Any] = {
        "decision_interval": exp.signals.decision_interval,
        "min_green": exp.signals.min_green,
        "max_green": exp.signals.max_green,
    }
    if exp.demand.scale != 1.0:
        options["sumo_args"] = ("--scale", repr(exp.demand.scale))
    if exp.sensors.detector_length is not None:
        options["detector_length"] = exp.sensors.detector_length
    if exp.sensors.first_wait:
        options["first_wait"] = True
    if exp.sensors.faults or exp.sensors.cleaning != "none":
        from simulator.cleaning import sensor_model

        options["sensor_model"] = sensor_model(exp.sensors.faults, exp.sensors.cleaning)
    return options


def _train_and_evaluate(
    unit: RunUnit, folder: Path
) -> tuple[dict[str, float], pd.DataFrame, pd.DataFrame]:
    from experiments.runner import run_episode
    from experiments.train import train

    scenario = unit.experiment.scenario()
    run = folder / "training" / unit.hash
    # an earlier attempt's checkpoint has the same settings (same hash): continue from it
    resume = (run / "checkpoints" / "last.pt").is_file()
    trained = train(unit.train_spec(), scenario, run, resume=resume, overwrite=not resume)
    if trained.stopped:
        raise _TrainingStopped(trained.stopped)
    result = run_episode(scenario, f"trained:{run}", unit.seed, **_sim_options(unit))
    curves = pd.read_csv(run / "curves.csv")
    episodes = curves[curves["kind"] == "episode"]
    keep = [c for c in ("episode", "return", "mean_delay_s", "eval_delay_s", "lr", "wall_s")
            if c in episodes.columns]
    return result.kpis, result.trips, episodes[keep].reset_index(drop=True)


def run_unit(unit: RunUnit, folder: str) -> Outcome:
    """Run one unit in this (worker) process; failures are reported, never raised.

    Args:
        unit: The run.
        folder: The results directory (learned controllers train into
            ``folder/training/<hash>/``; nothing else is written here).

    Returns:
        The attempt's outcome, for the parent to record.
    """
    out = Outcome(status="ok", started=_now(), worker_pid=os.getpid(),
                  host=socket.gethostname())
    began = time.perf_counter()
    try:
        curves = None
        if unit.learned:
            kpis, trips, curves = _train_and_evaluate(unit, Path(folder))
        else:
            from experiments.runner import run_episode

            result = run_episode(unit.experiment.scenario(), unit.controller, unit.seed,
                                 **_sim_options(unit))
            kpis, trips = result.kpis, result.trips
        exp = unit.experiment
        assert exp.begin is not None and exp.end is not None  # resolved
        out.kpis = {k: float(kpis[k]) for k in KPI_NAMES}
        out.delay_over_time = json.dumps(delay_over_time(trips, exp.begin, exp.end))
        out.trips = trips if exp.trips else None
        out.curves = curves
    except _TrainingStopped as err:
        out.status, out.error, out.retry = "failed", str(err), False
    except Exception as err:  # noqa: BLE001 - a failed run is recorded; the sweep goes on
        out.status, out.error = "failed", _one_line(err)
    out.wall_s = time.perf_counter() - began
    out.finished = _now()
    out.worker_rss_mb = peak_rss_mb()
    return out


# ------------------------------------------------------------------ in the parent
@dataclass(frozen=True)
class SweepResult:
    """A sweep's end: what ran, what failed, and the summary over seeds."""

    name: str
    """The spec's name."""
    folder: Path
    """The results directory."""
    backend: str
    """``local`` or ``ray``."""
    workers: int
    """Runs kept in flight at a time."""
    total: int
    """Runs in the plan."""
    skipped: int
    """Runs finished before this invocation (``--resume``)."""
    finished: int
    """Runs of the plan finished now, skipped ones included."""
    failed_attempts: int
    """Failed attempts in this invocation (retried or not)."""
    failures: list[dict[str, Any]]
    """Runs that ended failed: hash, network, controller, seed, attempts, error."""
    wall_s: float
    """Wall time of this invocation, from expanding the plan to the last run."""
    summary: pd.DataFrame
    """The report's summary (see :func:`experiments.report.summarize`)."""
    parent_rss_mb: float
    """Peak resident memory of this process."""
    worker_rss_mb: float
    """Largest peak resident memory a worker reported."""

    def to_json(self) -> dict[str, Any]:
        """The ``sweep --json`` document (no NaN: JSON has none)."""
        from experiments.report import plain

        return {
            "name": self.name, "folder": str(self.folder), "backend": self.backend,
            "workers": self.workers, "runs": self.total, "skipped": self.skipped,
            "finished": self.finished, "failed": len(self.failures),
            "failed_attempts": self.failed_attempts, "wall_s": round(self.wall_s, 3),
            "peak_rss_mb": {"parent": plain(self.parent_rss_mb),
                            "worker": plain(self.worker_rss_mb)},
            "summary": [{k: plain(v) for k, v in row.items()}
                        for row in self.summary.to_dict("records")],
            "failures": self.failures,
        }


class _Recorder:
    """Turns attempts into store rows, counts them and decides on retries."""

    def __init__(self, st: store.Store, retries: int, on_result: OnResult | None) -> None:
        self.store = st
        self.retries = retries
        self.on_result = on_result
        self.on_record: Callable[[], None] | None = None
        self.attempts = st.failed_attempts()  # numbering continues across invocations
        self.tries: dict[str, int] = {}
        self.failed_attempts = 0
        self.gave_up: dict[str, tuple[RunUnit, dict[str, Any]]] = {}
        self.worker_rss_mb = 0.0

    def record(self, unit: RunUnit, out: Outcome) -> bool:
        """Write the attempt to the store; return whether to try the run again."""
        attempt = self.attempts.get(unit.hash, 0) + 1
        row: dict[str, Any] = {
            "hash": unit.hash, "experiment": unit.experiment.name, "network": unit.network,
            "cell": unit.cell, "controller": unit.controller, "setting": unit.setting,
            "seed": unit.seed, "status": out.status, "attempt": attempt, "error": out.error,
            **out.kpis, "wall_s": out.wall_s, "started": out.started,
            "finished": out.finished or _now(), "worker_pid": out.worker_pid,
            "host": out.host, "worker_rss_mb": out.worker_rss_mb,
            "delay_over_time": out.delay_over_time,
            "spec": json.dumps(unit.resolved(), sort_keys=True),
        }
        if not math.isnan(out.worker_rss_mb):
            self.worker_rss_mb = max(self.worker_rss_mb, out.worker_rss_mb)
        retry = False
        if out.status == "ok":
            self.store.write_run(row, trips=out.trips, curves=out.curves)
            self.gave_up.pop(unit.hash, None)
        else:
            self.store.write_failure(row)
            self.attempts[unit.hash] = attempt
            self.failed_attempts += 1
            self.tries[unit.hash] = self.tries.get(unit.hash, 0) + 1
            retry = out.retry and self.tries[unit.hash] <= self.retries
            if not retry:
                self.gave_up[unit.hash] = (unit, row)
        if self.on_result is not None:
            self.on_result(unit, row, retry)
        if self.on_record is not None:
            self.on_record()
        return retry


def _died(started: str, why: str) -> Outcome:
    return Outcome(status="failed", started=started, finished=_now(), error=why)


def _run_local(todo: Sequence[RunUnit], folder: Path, workers: int, rec: _Recorder, *,
               wait: bool = False) -> None:
    """Run on a pool of spawned processes; rebuild the pool when a worker dies.

    A dead worker breaks the pool and fails every run in flight, so those runs are
    retried one at a time (*suspects*): the run that kills its worker is then the only one
    that fails again. With ``wait`` false the workers finish exiting in the background
    (their simulation servers take a moment to stop) while the caller writes its summary.
    """
    context = multiprocessing.get_context("spawn")
    queue: deque[RunUnit] = deque(todo)
    suspects: deque[RunUnit] = deque()
    pool: cf.ProcessPoolExecutor | None = None
    inflight: dict[cf.Future[Outcome], tuple[RunUnit, str]] = {}
    alone = False  # a suspect is running by itself

    def submit(unit: RunUnit) -> bool:
        """Hand a run to the pool; False when the pool broke before it could take it."""
        assert pool is not None
        try:
            inflight[pool.submit(run_unit, unit, str(folder))] = (unit, _now())
        except BrokenProcessPool:
            return False
        return True

    try:
        while queue or suspects or inflight:
            if pool is None:
                pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=context)
            refused = False
            if suspects and not inflight:
                unit = suspects.popleft()
                if submit(unit):
                    alone = True
                else:
                    suspects.appendleft(unit)
                    refused = True
            elif not alone:
                while queue and len(inflight) < workers:
                    unit = queue.popleft()
                    if not submit(unit):  # a worker died between two submissions
                        queue.appendleft(unit)
                        refused = True
                        break
            if refused and not inflight:
                pool.shutdown(wait=True, cancel_futures=True)
                pool = None
                continue
            done, _ = cf.wait(inflight, return_when=cf.FIRST_COMPLETED)
            broken = False
            while done:
                for future in done:
                    unit, started = inflight.pop(future)
                    try:
                        out = future.result()
                    except BrokenProcessPool:
                        broken = True
                        out = _died(started, "WorkerDied: a worker process died (killed or "
                                             "crashed) while this run was in flight")
                    except Exception as err:  # noqa: BLE001 - e.g. a result that cannot pickle
                        out = _died(started, _one_line(err))
                    if rec.record(unit, out):
                        (suspects if broken else queue).append(unit)
                # a broken pool fails every run still in flight at once: collect them too
                done = cf.wait(inflight)[0] if broken else set()
            if not inflight:
                alone = False
            if broken:
                pool.shutdown(wait=True, cancel_futures=True)
                pool = None
    finally:
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SweepError(RAY_MISSING) from None
    return ray


def _run_ray(
    todo: Sequence[RunUnit], folder: Path, workers: int | None, address: str | None,
    rec: _Recorder,
) -> int:
    """Run as Ray tasks; returns the number of runs kept in flight."""
    ray = _import_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    init_here = not ray.is_initialized()
    if init_here:
        options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        try:
            if address:
                ray.init(address=address, **options)
            else:
                # "local": a new Ray of our own, never one that `ray start` left running
                ray.init(address="local", num_cpus=workers or os.cpu_count() or 1,
                         include_dashboard=False, **options)
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = f"at {address}" if address else "locally"
            raise SweepError(f"cannot start Ray {where}: {_one_line(err)}") from None
    try:
        capacity = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        task = ray.remote(num_cpus=1, max_retries=0)(run_unit)
        queue: deque[RunUnit] = deque(todo)
        inflight: dict[Any, tuple[RunUnit, str]] = {}
        while queue or inflight:
            while queue and len(inflight) < capacity:
                unit = queue.popleft()
                inflight[task.remote(unit, str(folder))] = (unit, _now())
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                unit, started = inflight.pop(ref)
                try:
                    out = ray.get(ref)
                except ray.exceptions.RayError as err:  # a dead worker, a lost node
                    out = _died(started, _one_line(err))
                if rec.record(unit, out):
                    queue.append(unit)
        return capacity
    finally:
        if init_here:
            ray.shutdown()


def plan_units(plan: Sweep) -> list[RunUnit]:
    """The sweep's run units (every point, controller and seed, each once)."""
    return list(plan.units)


def prepare(st: store.Store, *, resume: bool, overwrite: bool) -> None:
    """Check that an opened store may take this sweep; clear it for ``overwrite``.

    Raises:
        SweepError: The store holds runs and neither ``resume`` nor ``overwrite`` is given.
    """
    if resume and overwrite:
        raise SweepError("give either --resume or --overwrite, not both")
    if store.has_runs(st.folder) and not (resume or overwrite):
        raise SweepError(f"{st.folder} already holds a sweep ({len(st.finished())} finished "
                         "runs): use --resume to continue it or --overwrite to start again")
    if overwrite:
        st.clear()
        shutil.rmtree(st.folder / "training", ignore_errors=True)


def sweep(
    plan: Sweep,
    folder: Path,
    *,
    workers: int | None = None,
    backend: str = "local",
    address: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    retries: int = DEFAULT_RETRIES,
    report: bool = True,
    on_start: OnStart | None = None,
    on_result: OnResult | None = None,
) -> SweepResult:
    """Run every unit of ``plan`` not yet in ``folder``'s store; write the results layout.

    Args:
        plan: The spec's sweep (a single experiment is a sweep of one point).
        folder: The results directory: ``store/``, ``spec.toml``, ``plan.json``,
            ``metrics.parquet``, ``summary.json``, ``report.md``, ``plots/``, ``log.txt``.
        workers: Runs at a time (default: the CPU cores; for Ray, the cluster's CPUs).
        backend: ``local`` (process pool) or ``ray``.
        address: A Ray cluster's address (``ray`` only; default: start a local Ray).
        resume: Skip the runs the store already holds.
        overwrite: Start again in a folder that holds a sweep.
        retries: Retries of a failed run.
        report: Write ``report.md`` and the plots at the end.
        on_start: Called with (runs, runs already finished) before running.
        on_result: Called after each attempt with its unit, row and whether it is retried.

    Raises:
        SweepError: Bad options, a store in the way, or Ray missing or unreachable.
        experiments.results.OutputError: The folder cannot be written.
    """
    if backend not in BACKENDS:
        raise SweepError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if address and backend != "ray":
        raise SweepError("--address needs --backend ray")
    if workers is not None and workers < 1:
        raise SweepError(f"--workers must be at least 1, got {workers}")
    if retries < 0:
        raise SweepError(f"--retries must be >= 0, got {retries}")
    if backend == "ray":
        _import_ray()  # a clear message before anything is written
    folder = Path(folder)
    results.ensure_writable(folder)
    units = plan_units(plan)
    started = time.perf_counter()
    with store.Store(folder) as st:
        prepare(st, resume=resume, overwrite=overwrite)
        results.write_text(folder / "spec.toml", spec.dump_toml(plan.to_dict()))
        results.write_json(folder / "plan.json", plan_document(plan, units))
        finished = st.finished()
        todo = [u for u in units if u.hash not in finished]
        skipped = len(units) - len(todo)
        if on_start is not None:
            on_start(len(units), skipped)
        rec = _Recorder(st, retries, on_result)
        n_workers = workers or os.cpu_count() or 1
        if todo:
            if backend == "local":
                _run_local(todo, folder, min(n_workers, len(todo)), rec)
            else:
                n_workers = _run_ray(todo, folder, workers, address, rec)
        wall = time.perf_counter() - started
        done = st.finished()
    from experiments import report as report_mod

    summary = report_mod.summarize(report_mod.load_runs(folder))
    failures = [
        {"hash": u.hash, "network": u.network, "controller": u.label, "seed": u.seed,
         "attempts": int(row["attempt"]), "error": row["error"]}
        for u, row in rec.gave_up.values() if u.hash not in done
    ]
    result = SweepResult(
        name=plan.name, folder=folder, backend=backend, workers=n_workers, total=len(units),
        skipped=skipped, finished=sum(1 for u in units if u.hash in done),
        failed_attempts=rec.failed_attempts, failures=failures, wall_s=wall, summary=summary,
        parent_rss_mb=peak_rss_mb(), worker_rss_mb=rec.worker_rss_mb or math.nan,
    )
    ok = store.read(folder, status="ok")
    ok = ok[ok["hash"].isin({u.hash for u in units})]
    results.write_parquet(folder / "metrics.parquet", ok)
    doc = result.to_json() | {"written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    results.write_json(folder / "summary.json", doc)
    if report:
        report_mod.write_report(folder)
    _append_log(folder, result)
    return result


def plan_document(plan: Sweep, units: Sequence[RunUnit]) -> dict[str, Any]:
    """``plan.json``: the sweep's runs in order (the report reads its rows by these hashes)."""
    return {
        "name": plan.name,
        "runs": [{"hash": u.hash, "network": u.network, "cell": u.cell,
                  "controller": u.controller, "setting": u.setting, "seed": u.seed}
                 for u in units],
    }


def _append_log(folder: Path, result: SweepResult) -> None:
    lines = [f"{_now()} greenphase sweep {result.name}: {result.total} runs, "
             f"{result.skipped} finished before, {result.finished} finished now, "
             f"{len(result.failures)} failed ({result.failed_attempts} failed attempts), "
             f"{result.wall_s:.1f} s on {result.workers} {result.backend} worker(s)"]
    lines += [f"  failed: {f['network']} {f['controller']} seed {f['seed']} after "
              f"{f['attempts']} attempt(s): {f['error']}" for f in result.failures]
    log = folder / "log.txt"
    old = log.read_text() if log.is_file() else ""
    results.write_text(log, old + "\n".join(lines) + "\n")


# ------------------------------------------------------------------ scaling and memory
def _bench_plan(network: str, runs: int, controllers: Sequence[str],
                horizon_s: int | None, *, trips: bool) -> Sweep:
    """``runs`` runs of similar size: the controllers over as many seeds as it takes."""
    seeds = tuple(range(-(-runs // len(controllers))))
    exp = spec.Experiment(name=f"bench-{network}", network=network, controllers=tuple(controllers),
                          seeds=seeds, horizon_s=horizon_s, trips=trips)
    return Sweep(exp)


def scaling(
    folder: Path, *, network: str = "grid4x4", runs: int = 8, workers: Sequence[int] = (1, 2),
    repeats: int = 1, horizon_s: int | None = None, burn_loops: int = 10_000_000,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Wall time of the same ``runs`` runs on 1 worker and on more: the speed-up of the pool.

    Each measurement is a whole pool from start-up to its workers' exit, into a fresh
    store, with ``fixed`` and ``max-pressure`` over seeds. Repeats are interleaved (every
    worker count once, then again) so that noise on a shared machine hits all alike; the
    median counts.

    Each sweep is followed by the same pool on plain CPU work (``cpu_burn_s``: as many
    tasks of ``burn_loops`` iterations, about a second of one core by default; 0: none),
    which shows what the machine itself allows: on an idle 2-core machine its ratio is
    about 0.5; where other jobs hold the cores, near 1.

    Returns:
        ``{"network", "runs", "repeats", "load_avg_1m", "rows": [{"workers", "wall_s",
        "walls_s", "cpu_burn_s", "ratio_to_1", "cpu_burn_ratio_to_1"}]}``;
        ``load_avg_1m`` is the machine's load before and after.
    """
    if repeats < 1 or runs < 1 or not workers or min(workers) < 1:
        raise SweepError("bench: runs, repeats and worker counts must be at least 1")
    plan = _bench_plan(network, runs, ("fixed", "max-pressure"), horizon_s, trips=False)
    units = plan_units(plan)[:runs]
    walls: dict[int, list[float]] = {n: [] for n in workers}
    burns: dict[int, list[float]] = {n: [] for n in workers}
    load_before = os.getloadavg()[0]
    for repeat in range(repeats):
        for n in workers:
            target = folder / f"workers-{n}"
            shutil.rmtree(target, ignore_errors=True)
            if progress is not None:
                progress(f"repeat {repeat + 1}: {len(units)} runs of {network} on {n} worker(s)")
            began = time.perf_counter()
            with store.Store(target) as st:
                rec = _Recorder(st, 0, None)
                _run_local(units, target, n, rec, wait=True)  # the workers' exit included
            walls[n].append(round(time.perf_counter() - began, 3))
            if rec.failed_attempts:
                raise SweepError(f"bench: {rec.failed_attempts} run(s) failed; see {target}")
            if not burn_loops:
                continue
            # the machine's own ceiling: the same pool on plain CPU work of about the same size
            began = time.perf_counter()
            with cf.ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as p:
                list(p.map(_burn, [burn_loops] * len(units)))
            burns[n].append(round(time.perf_counter() - began, 3))
    rows: list[dict[str, Any]] = [
        {"workers": n, "wall_s": round(statistics.median(walls[n]), 3), "walls_s": walls[n]}
        for n in workers
    ]
    for row in rows:
        row["ratio_to_1"] = round(row["wall_s"] / rows[0]["wall_s"], 3)
        if burn_loops:
            row["cpu_burn_s"] = round(statistics.median(burns[row["workers"]]), 3)
            row["cpu_burn_ratio_to_1"] = round(
                row["cpu_burn_s"] / statistics.median(burns[workers[0]]), 3)
    return {"network": network, "runs": len(units), "repeats": repeats,
            "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)], "rows": rows}


def _burn(loops: int) -> int:
    """Plain CPU work for the scaling bench's calibration (no I/O, no memory)."""
    total = 0
    for i in range(loops):
        total += i * i
    return total


def memory(
    folder: Path, *, network: str = "cologne1", runs: int = 100, workers: int | None = None,
    horizon_s: int | None = None, marks: Sequence[int] = (10, 50, 100),
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Peak resident memory of the parent and the workers as a ``runs``-run sweep goes on.

    The runs are ``fixed``, ``max-pressure``, ``sotl`` and ``webster`` over seeds, keeping
    their trips (as a sweep does by default); nothing is retried.

    Returns:
        ``{"network", "runs", "workers", "wall_s", "failed_attempts", "rows": [{"runs",
        "parent_peak_rss_mb", "parent_rss_mb", "worker_peak_rss_mb"}]}``, one row at each of
        ``marks`` finished runs (and at the last).
    """
    controllers = ("fixed", "max-pressure", "sotl", "webster")
    plan = _bench_plan(network, runs, controllers, horizon_s, trips=True)
    units = plan_units(plan)[:runs]
    shutil.rmtree(folder, ignore_errors=True)
    rows: list[dict[str, Any]] = []
    count = 0
    with store.Store(folder) as st:
        rec = _Recorder(st, 0, None)

        def mark() -> None:
            nonlocal count
            count += 1
            if count in marks or count == len(units):
                rows.append({"runs": count, "parent_peak_rss_mb": round(peak_rss_mb(), 1),
                             "parent_rss_mb": round(_current_rss_mb(), 1),
                             "worker_peak_rss_mb": round(rec.worker_rss_mb, 1)})
                if progress is not None:
                    progress(f"{count} runs: parent {rows[-1]['parent_rss_mb']} MiB, "
                             f"workers peak {rows[-1]['worker_peak_rss_mb']} MiB")

        rec.on_record = mark
        n_workers = workers or os.cpu_count() or 1
        began = time.perf_counter()
        _run_local(units, folder, n_workers, rec)
    return {"network": network, "runs": len(units), "workers": n_workers,
            "wall_s": round(time.perf_counter() - began, 1), "failed_attempts": rec.failed_attempts,
            "rows": rows}


def _current_rss_mb() -> float:
    for line in _proc_status():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan
