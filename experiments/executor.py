"""Executors: where run units run, in this process, on a local process pool, or on Ray.

Every command's runs go through one of three :class:`Executor` implementations with one
interface: :meth:`Executor.run` takes the run units and a ``record`` callback, runs each
unit with :func:`run_unit` and hands every attempt's :class:`Outcome` to ``record``, which
stores it and answers whether to run the unit again. The retry policy and the store
belong to the caller (:func:`experiments.sweep.sweep`); an executor only runs.

libsumo holds one simulation per process, and every episode already runs in a fresh
process forked from greenphase's clean simulation server, so a run's metrics depend on
its spec and seed only: the same in this process, on one worker or many, locally or on
Ray.

- :class:`InProcessExecutor`: one run after another in this process (what ``compare``
  has always done); it can report every decision step for a progress bar.
- :class:`PoolExecutor`: a :class:`concurrent.futures.ProcessPoolExecutor` of spawned
  workers. A killed worker breaks the pool: the runs in flight are recorded as failed,
  the pool is rebuilt, and those runs are retried one at a time, so the run that kills
  its worker is the only one that keeps failing. The workers leave Ctrl-C to the
  parent and end with it, however it ends.
- :class:`RayExecutor`: the same runs as Ray tasks (``pip install 'greenphase[ray]'``),
  on a local Ray or a cluster at ``address``. Every node needs greenphase installed;
  learned controllers also need the results folder on a filesystem the nodes share.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import json
import logging
import math
import multiprocessing
import os
import resource
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from networks import scratch
from simulator.metrics import KPI_NAMES, delay_over_time
from simulator.processes import follow_parent, interrupts_deferred
from simulator.sumo import SimulationFailed, described

if TYPE_CHECKING:
    from experiments.units import RunUnit

BACKENDS = ("local", "ray")
"""Where a sweep's runs execute (``local``: a process pool)."""
RAY_MISSING = "the ray backend needs: pip install 'greenphase[ray]'"

Record = Callable[["RunUnit", "Outcome"], bool]
"""Stores an attempt; returns whether to run the unit again."""
OnStep = Callable[["RunUnit", float], None]
"""Called with the unit and the simulated time after each decision step (in process only)."""


class SweepError(ValueError):
    """Runs that cannot start (bad options, a store in the way, no ray); one line."""


class RunFailed(RuntimeError):
    """A run failed while it ran (not bad input found before it): names the run and why."""


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
    """Why it failed: the exception's type and its whole message (:func:`one_line`)."""
    retry: bool = True
    """Whether trying again could help: not after bad input found during the run (SUMO
    refused it, a controller raised) or a diverged training; after a crash, yes."""
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
    """JSON: mean delay of trips binned by scheduled departure."""
    trips: pd.DataFrame | None = None
    """Per-trip rows, when the spec keeps them."""
    curves: pd.DataFrame | None = None
    """A learned controller's training curve (episode rows)."""


class _TrainingStopped(RuntimeError):
    """Training diverged: trying again would diverge again."""


def now() -> str:
    """The UTC time as ISO 8601, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def one_line(err: BaseException) -> str:
    """An exception as ``Type: message``, the whole message on one line.

    A :class:`~simulator.sumo.SimulationFailed` message already says what failed.
    """
    return str(err) if isinstance(err, SimulationFailed) else described(err)


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB.

    Linux's ``VmHWM`` where there is one: unlike ``ru_maxrss``, which a spawned process
    inherits across ``exec`` from its parent, it counts this program's own pages only.
    """
    for line in proc_status():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def proc_status() -> list[str]:
    """Lines of ``/proc/self/status`` (none off Linux)."""
    try:
        return Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return []


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
    result = run_episode(scenario, f"trained:{run}", unit.seed, unit.options)
    curves = pd.read_csv(run / "curves.csv")
    episodes = curves[curves["kind"] == "episode"]
    keep = [c for c in ("episode", "return", "mean_delay_s", "eval_delay_s", "lr", "wall_s")
            if c in episodes.columns]
    return result.kpis, result.trips, episodes[keep].reset_index(drop=True)


def run_unit(unit: RunUnit, folder: str, on_step: Callable[[float], None] | None = None,
             *, raise_errors: bool = False) -> Outcome:
    """Run one unit in this (worker) process; failures are reported, never raised.

    Args:
        unit: The run.
        folder: The results directory (learned controllers train into
            ``folder/training/<hash>/``; nothing else is written here).
        on_step: Called with the simulated time after each decision step of the
            evaluated episode.
        raise_errors: Raise a run's error instead of reporting it.

    Returns:
        The attempt's outcome, for the parent to record.
    """
    out = Outcome(status="ok", started=now(), worker_pid=os.getpid(),
                  host=socket.gethostname())
    began = time.perf_counter()
    try:
        curves = None
        if unit.learned:
            kpis, trips, curves = _train_and_evaluate(unit, Path(folder))
        else:
            from experiments.runner import run_episode

            result = run_episode(unit.experiment.scenario(), unit.controller, unit.seed,
                                 unit.options, on_step=on_step)
            kpis, trips = result.kpis, result.trips
        exp = unit.experiment
        assert exp.begin is not None and exp.end is not None  # resolved
        out.kpis = {k: float(kpis[k]) for k in KPI_NAMES}
        out.delay_over_time = json.dumps(delay_over_time(trips, exp.begin, exp.end))
        out.trips = trips if exp.trips else None
        out.curves = curves
    except _TrainingStopped as err:
        out.status, out.error, out.retry = "failed", str(err), False
    except Exception as err:  # noqa: BLE001 - a failed run is recorded; the others go on
        if raise_errors and isinstance(err, SimulationFailed):
            raise RunFailed(f"{unit.label} on {unit.network}, seed {unit.seed}, failed: "
                            f"{one_line(err)}") from err
        if raise_errors:
            raise
        out.status, out.error = "failed", one_line(err)
        out.retry = not (isinstance(err, SimulationFailed) and err.deterministic)
    out.wall_s = time.perf_counter() - began
    out.finished = now()
    out.worker_rss_mb = peak_rss_mb()
    return out


def stop_workers(pool: cf.ProcessPoolExecutor) -> None:
    """End a pool's workers now, their runs unfinished (an interrupt: nothing waits)."""
    workers = list((getattr(pool, "_processes", None) or {}).values())
    for process in workers:
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for process in workers:
        process.join(timeout=2)
    scratch.remove_stale()  # the folders of the workers just ended


def died(started: str, why: str) -> Outcome:
    """The outcome of an attempt whose worker never reported."""
    return Outcome(status="failed", started=started, finished=now(), error=why)


# ------------------------------------------------------------------ the executors
class Executor(Protocol):
    """Runs run units and reports every attempt."""

    name: str
    """``in-process``, ``local`` or ``ray``."""

    @property
    def workers(self) -> int:
        """Runs kept in flight at a time (known once :meth:`run` has started)."""

    def run(self, units: Sequence[RunUnit], folder: Path, record: Record) -> None:
        """Run every unit, again while ``record`` answers True, until none is left.

        Args:
            units: The runs, in the order to start them.
            folder: The results directory (learned controllers train inside it).
            record: Stores an attempt and says whether to run the unit again.
        """


class InProcessExecutor:
    """One run after another in this process.

    Args:
        on_step: Called with the unit and the simulated time after each decision step.
        raise_errors: Raise a run's error at once (a command's one clear line) instead
            of recording it as a failed attempt.
    """

    name = "in-process"
    workers = 1

    def __init__(self, on_step: OnStep | None = None, *, raise_errors: bool = False) -> None:
        self.on_step = on_step
        self.raise_errors = raise_errors

    def run(self, units: Sequence[RunUnit], folder: Path, record: Record) -> None:
        """See :meth:`Executor.run`."""
        queue: deque[RunUnit] = deque(units)
        while queue:
            unit = queue.popleft()
            hook = None if self.on_step is None else functools.partial(self.on_step, unit)
            out = run_unit(unit, str(folder), hook, raise_errors=self.raise_errors)
            if record(unit, out):
                queue.append(unit)


class PoolExecutor:
    """A pool of spawned worker processes, rebuilt when a worker dies.

    Args:
        workers: Runs at a time (default: the CPU cores, at most one per unit).
        wait: Whether to wait for the workers to exit at the end; otherwise they finish
            exiting in the background (their simulation servers take a moment to stop)
            while the caller writes its summary.
    """

    name = "local"

    def __init__(self, workers: int | None = None, *, wait: bool = False) -> None:
        self.requested = workers
        self.workers = workers or os.cpu_count() or 1
        self.wait = wait

    def run(self, units: Sequence[RunUnit], folder: Path, record: Record) -> None:
        """See :meth:`Executor.run`.

        A dead worker breaks the pool and fails every run in flight, so those runs are
        retried one at a time (*suspects*): the run that kills its worker is then the only
        one that fails again.
        """
        if not units:
            return
        workers = min(self.workers, len(units))
        context = multiprocessing.get_context("spawn")
        queue: deque[RunUnit] = deque(units)
        suspects: deque[RunUnit] = deque()
        pool: cf.ProcessPoolExecutor | None = None
        inflight: dict[cf.Future[Outcome], tuple[RunUnit, str]] = {}
        alone = False  # a suspect is running by itself

        def submit(unit: RunUnit) -> bool:
            """Hand a run to the pool; False when the pool broke before it could take it."""
            assert pool is not None
            try:
                with interrupts_deferred():  # the pool may start a worker here
                    inflight[pool.submit(run_unit, unit, str(folder))] = (unit, now())
            except BrokenProcessPool:
                return False
            return True

        try:
            while queue or suspects or inflight:
                if pool is None:
                    # else a worker outlives a killed parent, blocked on a queue nobody
                    # writes or a pipe nobody reads, its simulation server beside it
                    pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                                  initializer=follow_parent,
                                                  initargs=(os.getpid(),))
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
                            out = died(started, "WorkerDied: a worker process died (killed or "
                                                "crashed) while this run was in flight")
                        except Exception as err:  # noqa: BLE001 - e.g. a result that cannot pickle
                            out = died(started, one_line(err))
                        if record(unit, out):
                            (suspects if broken else queue).append(unit)
                    # a broken pool fails every run still in flight at once: collect them too
                    done = cf.wait(inflight)[0] if broken else set()
                if not inflight:
                    alone = False
                if broken:
                    pool.shutdown(wait=True, cancel_futures=True)
                    pool = None
        except BaseException:  # an interrupt above all: the workers' runs are abandoned
            if pool is not None:
                stop_workers(pool)
                pool = None
            raise
        finally:
            if pool is not None:
                pool.shutdown(wait=self.wait, cancel_futures=True)


def import_ray() -> Any:
    """The ray module.

    Raises:
        SweepError: Ray is not installed.
    """
    try:
        import ray
    except ImportError:
        raise SweepError(RAY_MISSING) from None
    return ray


class RayExecutor:
    """Ray tasks, on a Ray of our own or on a cluster.

    Args:
        address: A Ray cluster's address (default: start a local Ray).
        workers: Runs at a time (default: the cluster's CPUs).
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        import_ray()  # a clear message before anything is written
        self.address = address
        self.requested = workers
        self.workers = workers or os.cpu_count() or 1

    def run(self, units: Sequence[RunUnit], folder: Path, record: Record) -> None:
        """See :meth:`Executor.run`."""
        if not units:
            return
        ray = import_ray()
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        init_here = not ray.is_initialized()
        if init_here:
            options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
            try:
                if self.address:
                    ray.init(address=self.address, **options)
                else:
                    # "local": a new Ray of our own, never one that `ray start` left running
                    ray.init(address="local", num_cpus=self.requested or os.cpu_count() or 1,
                             include_dashboard=False, **options)
            except (ConnectionError, RuntimeError, ValueError) as err:
                where = f"at {self.address}" if self.address else "locally"
                raise SweepError(f"cannot start Ray {where}: {one_line(err)}") from None
        try:
            capacity = self.requested or max(1, int(ray.cluster_resources().get("CPU", 1)))
            self.workers = capacity
            task = ray.remote(num_cpus=1, max_retries=0)(run_unit)
            queue: deque[RunUnit] = deque(units)
            inflight: dict[Any, tuple[RunUnit, str]] = {}
            while queue or inflight:
                while queue and len(inflight) < capacity:
                    unit = queue.popleft()
                    inflight[task.remote(unit, str(folder))] = (unit, now())
                ready, _ = ray.wait(list(inflight), num_returns=1)
                for ref in ready:
                    unit, started = inflight.pop(ref)
                    try:
                        out = ray.get(ref)
                    except ray.exceptions.RayError as err:  # a dead worker, a lost node
                        out = died(started, one_line(err))
                    if record(unit, out):
                        queue.append(unit)
        finally:
            if init_here:
                ray.shutdown()


def make_executor(backend: str = "local", workers: int | None = None,
                  address: str | None = None) -> Executor:
    """The executor a sweep's options name.

    Raises:
        SweepError: An unknown backend, ``address`` without Ray, fewer than one worker,
            or Ray missing.
    """
    if backend not in BACKENDS:
        raise SweepError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if address and backend != "ray":
        raise SweepError("--address needs --backend ray")
    if workers is not None and workers < 1:
        raise SweepError(f"--workers must be at least 1, got {workers}")
    if backend == "ray":
        return RayExecutor(address, workers)
    return PoolExecutor(workers)
