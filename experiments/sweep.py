"""The one experiment pipeline: run a plan's units on an executor, store each as it ends, report.

Every command that runs controllers (``compare``, ``evaluate``, ``run``, ``sweep``,
``robustness``, ``study``) builds a :class:`~experiments.spec.Sweep` and hands it to
:func:`execute`: the units not yet stored run on an executor
(:mod:`experiments.executor`: in this process, a local process pool, or Ray), each
attempt is recorded in the store (:mod:`experiments.store`) as it ends, and the folder
gets the one results layout (:mod:`experiments.layout`) with ``manifest.json`` and
``spec.toml``. :func:`sweep` (``run`` and ``sweep``) adds ``metrics.parquet``,
``summary.json``, ``report.md``, ``plots/`` and ``log.txt``; the other commands add
their own files beside the store.

The parent process is the only writer of the store: each finished run is written at
once and atomically, so ``--resume`` skips exactly the runs that finished. A run that
fails (SUMO dies, an exception, a killed worker) is recorded as a failed attempt with
its error and retried up to ``retries`` times; the rest of the plan goes on.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
import multiprocessing
import os
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from experiments import layout, results, spec, store
from experiments.executor import (
    BACKENDS,
    RAY_MISSING,
    Executor,
    Outcome,
    PoolExecutor,
    SweepError,
    make_executor,
    now,
    peak_rss_mb,
    proc_status,
)
from experiments.report import write_report
from experiments.results import WriteFailed, plain
from experiments.spec import RunUnit, Sweep
from experiments.summary import records, summarize

__all__ = ["BACKENDS", "DEFAULT_RETRIES", "RAY_MISSING", "SweepError", "SweepResult",
           "WriteFailed", "execute", "memory", "prepare", "scaling", "sweep"]

DEFAULT_RETRIES = 2
"""Retries of a failed run (so up to three attempts) in one invocation."""

OnStart = Callable[[int, int], None]
"""Called with (runs in the plan, runs already finished) before the first run starts."""
OnResult = Callable[[RunUnit, dict[str, Any], bool], None]
"""Called with each attempt's unit, store row and whether it will be retried."""


@dataclass(frozen=True)
class SweepResult:
    """A plan's end: what ran, what failed, and the summary over seeds."""

    name: str
    """The spec's name."""
    folder: Path
    """The results directory."""
    backend: str
    """The executor: ``in-process``, ``local`` or ``ray``."""
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
    """The summary over seeds (see :func:`experiments.summary.summarize`)."""
    parent_rss_mb: float
    """Peak resident memory of this process."""
    worker_rss_mb: float
    """Largest peak resident memory a worker reported."""
    runs: pd.DataFrame
    """The store's finished rows of the plan's runs, in the plan's order."""
    set_aside: tuple[Path, ...] = ()
    """Damaged files moved to ``store/damaged/`` on resume (their runs ran again)."""

    def to_json(self) -> dict[str, Any]:
        """The ``sweep --json`` document (no NaN: JSON has none)."""
        return {
            "name": self.name, "folder": str(self.folder), "backend": self.backend,
            "workers": self.workers, "runs": self.total, "skipped": self.skipped,
            "finished": self.finished, "failed": len(self.failures),
            "failed_attempts": self.failed_attempts, "wall_s": round(self.wall_s, 3),
            "peak_rss_mb": {"parent": plain(self.parent_rss_mb),
                            "worker": plain(self.worker_rss_mb)},
            "summary": records(self.summary),
            "failures": self.failures,
            "damaged_set_aside": [str(p) for p in self.set_aside],
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
        self.finished_rows: list[dict[str, Any]] = []
        """The finished runs in memory, so that a store that cannot be written loses none."""

    def record(self, unit: RunUnit, out: Outcome) -> bool:
        """Write the attempt to the store; return whether to try the run again."""
        attempt = self.attempts.get(unit.hash, 0) + 1
        row: dict[str, Any] = {
            "hash": unit.hash, "experiment": unit.experiment.name, "network": unit.network,
            "cell": unit.cell, "controller": unit.controller, "setting": unit.setting,
            "seed": unit.seed, "status": out.status, "attempt": attempt, "error": out.error,
            **out.kpis, "wall_s": out.wall_s, "started": out.started,
            "finished": out.finished or now(), "worker_pid": out.worker_pid,
            "host": out.host, "worker_rss_mb": out.worker_rss_mb,
            "delay_over_time": out.delay_over_time,
            "spec": json.dumps(unit.resolved(), sort_keys=True),
        }
        if not math.isnan(out.worker_rss_mb):
            self.worker_rss_mb = max(self.worker_rss_mb, out.worker_rss_mb)
        retry = False
        if out.status == "ok":
            self.finished_rows.append(row)
            self._write(lambda: self.store.write_run(row, trips=out.trips, curves=out.curves))
            self.gave_up.pop(unit.hash, None)
        else:
            self._write(lambda: self.store.write_failure(row))
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

    def _write(self, write: Callable[[], object]) -> None:
        try:
            write()
        except OSError as err:
            raise WriteFailed(self.store.folder, err, self.finished_rows,
                              len(self.store.finished())) from None


def prepare(st: store.Store, *, resume: bool, overwrite: bool) -> list[Path]:
    """Check that an opened store may take this plan; clear it for ``overwrite``.

    On ``resume``, damaged files are moved to ``store/damaged/`` so that their runs
    run again; they are returned.

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
    return st.set_aside_damaged() if resume else []


def sweep(
    plan: Sweep,
    folder: Path,
    *,
    executor: Executor | None = None,
    workers: int | None = None,
    backend: str = "local",
    address: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    retries: int = DEFAULT_RETRIES,
    report: bool = True,
    kind: str = "sweep",
    manifest: dict[str, Any] | None = None,
    on_start: OnStart | None = None,
    on_result: OnResult | None = None,
) -> SweepResult:
    """Run every unit of ``plan`` not yet in ``folder``'s store; write the results layout.

    Args:
        plan: The spec's sweep (a single experiment is a sweep of one point).
        folder: The results directory: ``store/``, ``manifest.json``, ``spec.toml``,
            ``metrics.parquet``, ``summary.json``, ``report.md``, ``plots/``, ``log.txt``.
        executor: Where the runs run (default: ``backend``'s, with ``workers`` and
            ``address``).
        workers: Runs at a time (default: the CPU cores; for Ray, the cluster's CPUs).
        backend: ``local`` (process pool) or ``ray``.
        address: A Ray cluster's address (``ray`` only; default: start a local Ray).
        resume: Skip the runs the store already holds.
        overwrite: Start again in a folder that holds a sweep.
        retries: Retries of a failed run.
        report: Write ``report.md`` and the plots at the end.
        kind: The command, as the manifest names it (:data:`experiments.layout.KINDS`).
        manifest: More entries for the manifest.
        on_start: Called with (runs, runs already finished) before running.
        on_result: Called after each attempt with its unit, row and whether it is retried.

    Raises:
        SweepError: Bad options, a store in the way, or Ray missing or unreachable.
        experiments.results.OutputError: The folder cannot be written.
    """
    if resume and overwrite:
        raise SweepError("give either --resume or --overwrite, not both")
    # another command's folder is refused here; a sweep's own, by prepare under its lock
    layout.claim(folder, kind, resume=True, overwrite=overwrite)
    if executor is None:
        executor = make_executor(backend, workers, address)
    result = execute(plan, folder, executor=executor, resume=resume, overwrite=overwrite,
                     retries=retries, kind=kind, manifest=manifest, on_start=on_start,
                     on_result=on_result)
    folder = result.folder
    results.write_parquet(folder / "metrics.parquet", result.runs)
    results.write_summary(folder, result.to_json())
    if report:
        write_report(folder)
    _append_log(folder, result)
    return result


def execute(
    plan: Sweep,
    folder: Path,
    *,
    executor: Executor,
    units: Sequence[RunUnit] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    retries: int = DEFAULT_RETRIES,
    kind: str = "sweep",
    manifest: dict[str, Any] | None = None,
    on_start: OnStart | None = None,
    on_result: OnResult | None = None,
) -> SweepResult:
    """The pipeline: store, manifest and spec, every missing unit run and recorded, summary.

    What :func:`sweep` does before it writes its metrics, summary, report and log; every
    command's runs go through here. The arguments are :func:`sweep`'s; ``units`` replaces
    the plan's run units (a command that runs a few more or fewer than its plan says).
    """
    if retries < 0:
        raise SweepError(f"--retries must be >= 0, got {retries}")
    folder = Path(folder)
    results.ensure_writable(folder)
    units = list(plan.units if units is None else units)
    started = time.perf_counter()
    with store.Store(folder) as st:
        set_aside = prepare(st, resume=resume, overwrite=overwrite)
        try:
            results.write_toml(folder / "spec.toml", plan.to_dict())
            layout.write_manifest(folder, kind, plan, units, manifest)
        except OSError as err:
            raise WriteFailed(folder, err, [], len(st.finished())) from None
        finished = st.finished()
        todo = [u for u in units if u.hash not in finished]
        skipped = len(units) - len(todo)
        if on_start is not None:
            on_start(len(units), skipped)
        rec = _Recorder(st, retries, on_result)
        executor.run(todo, folder, rec.record)
        wall = time.perf_counter() - started
        done = st.finished()
    runs = layout.load_runs(folder)
    failures = [
        {"hash": u.hash, "network": u.network, "controller": u.label, "seed": u.seed,
         "attempts": int(row["attempt"]), "error": row["error"]}
        for u, row in rec.gave_up.values() if u.hash not in done
    ]
    ok = runs[runs["status"] == "ok"].drop(columns="order").reset_index(drop=True)
    return SweepResult(
        name=plan.name, folder=folder, backend=executor.name, workers=executor.workers,
        total=len(units), skipped=skipped, finished=sum(1 for u in units if u.hash in done),
        failed_attempts=rec.failed_attempts, failures=failures, wall_s=wall,
        summary=summarize(runs), parent_rss_mb=peak_rss_mb(),
        worker_rss_mb=rec.worker_rss_mb or math.nan, runs=ok, set_aside=tuple(set_aside),
    )


def _append_log(folder: Path, result: SweepResult) -> None:
    lines = [f"{now()} greenphase sweep {result.name}: {result.total} runs, "
             f"{result.skipped} finished before, {result.finished} finished now, "
             f"{len(result.failures)} failed ({result.failed_attempts} failed attempts), "
             f"{result.wall_s:.1f} s on {result.workers} {result.backend} worker(s)"]
    lines += [f"  failed: {f['network']} {f['controller']} seed {f['seed']} after "
              f"{f['attempts']} attempt(s): {f['error']}" for f in result.failures]
    lines += [f"  damaged, set aside and run again: {path}" for path in result.set_aside]
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
    units = list(plan.units)[:runs]
    _scratch(folder)
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
                # the workers' exit included
                PoolExecutor(n, wait=True).run(units, target, rec.record)
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


def _scratch(folder: Path) -> None:
    """Take ``folder`` as the benches' scratch: a new one, or one they wrote before."""
    layout.claim(folder, "bench-sweep", overwrite=True)
    results.write_text(folder / layout.SCRATCH,
                       "A scratch folder of `greenphase bench-sweep`: its runs are timed, not "
                       "kept, and the next bench-sweep replaces them.\n")


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
    units = list(plan.units)[:runs]
    _scratch(folder)
    shutil.rmtree(folder / store.STORE, ignore_errors=True)
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
        PoolExecutor(n_workers).run(units, folder, rec.record)
    return {"network": network, "runs": len(units), "workers": n_workers,
            "wall_s": round(time.perf_counter() - began, 1), "failed_attempts": rec.failed_attempts,
            "rows": rows}


def _current_rss_mb() -> float:
    for line in proc_status():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan
