"""Comparing controllers on one scenario: same demand, same seeds, same horizon for each.

A comparison is an experiment of one point (:func:`experiment_of`) run through the one
pipeline (:func:`experiments.sweep.execute`) into the one results layout, plus the files
``compare`` has always written: ``metrics.parquet`` (one row per controller and seed),
``summary.json`` (the ``compare --json`` document), ``trips.parquet``,
``plots/delay.png`` and ``log.txt``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

import networks
from agents import make_controller
from experiments import layout, results, store
from experiments.executor import Executor, InProcessExecutor, SweepError
from experiments.spec import Demand, Experiment, Sensors, Signals, Sweep
from experiments.summary import REFERENCE, SUMMARY_KPIS, records, summarize
from experiments.sweep import WriteFailed, execute
from networks import NetworkError, Scenario
from simulator.metrics import KPI_NAMES
from simulator.options import SimulationOptions

__all__ = ["REFERENCE", "SUMMARY_KPIS", "Comparison", "compare", "document", "experiment_of",
           "plot_delay", "summary_of", "validate_controllers"]

COUNTS = ("vehicles", "unfinished", "not_inserted")
"""KPIs that count vehicles: integers in the ``runs`` rows."""


@dataclass(frozen=True)
class Comparison:
    """Runs and their summary over seeds."""

    scenario: Scenario
    runs: pd.DataFrame
    """One row per (controller, seed): the KPIs and the wall time."""
    summary: pd.DataFrame
    """One row per controller: means and 95% CIs over seeds, delay versus fixed in %."""

    options: SimulationOptions = SimulationOptions()
    """How the runs were simulated (their demand and protocol)."""
    error: str = ""
    """Why the results could not all be written (a full disk): what was kept, and where.
    The runs and summary are those that finished; empty when everything was written."""

    def to_json(self) -> dict[str, Any]:
        """The ``compare --json`` document of DESIGN.md."""
        return document(self.scenario, self.runs, self.summary, **conditions(self.options))


def conditions(options: SimulationOptions) -> dict[str, Any]:
    """What a results document records of how it ran: the demand and the protocol."""
    demand = options.demand
    return {"demand": {"mode": demand.mode, "scale": demand.scale, "bin_s": demand.bin_s},
            "protocol": options.protocol}


def document(scenario: Scenario, runs: pd.DataFrame, summary: pd.DataFrame,
             **more: Any) -> dict[str, Any]:
    """A ``--json`` document: the scenario, ``more``, then the runs and their summary."""
    return {"network": scenario.name, "begin_s": scenario.begin, "end_s": scenario.end,
            **more, "runs": records(runs), "summary": records(summary)}


def validate_controllers(names: Sequence[str], network: str | None = None) -> list[str]:
    """Check every name (raises on an unknown one); put the fixed-time reference first.

    Given the scenario's ``network``, a ``tuned:DIR`` tuned on another network is refused.
    """
    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not names:
        raise ValueError("no controller given")
    for name in names:
        make_controller(name, network=network)
    if REFERENCE in names:
        names.remove(REFERENCE)
    return [REFERENCE, *names]


def experiment_of(scenario: Scenario, controllers: Sequence[str], seeds: Sequence[int],
                  options: SimulationOptions | None = None, *, name: str = "compare",
                  trips: bool = True, training: Any = None) -> Experiment:
    """The experiment of one scenario, controllers, seeds and simulation settings.

    A registered network is named; a net of the user's own is given by its files.
    ``training`` is a TrainSpec for learned controllers.

    Raises:
        ValueError: Settings a spec cannot hold (a teleport time or extra SUMO arguments).
    """
    options = options or SimulationOptions()
    if options.sumo_args or options.time_to_teleport != SimulationOptions().time_to_teleport:
        raise ValueError("an experiment takes no teleport time or extra SUMO arguments")
    where: dict[str, Any] = {"net": str(scenario.net_file),
                             "routes": tuple(str(r) for r in scenario.route_files)}
    with contextlib.suppress(NetworkError):
        registered = networks.get(scenario.name)
        if (Path(registered.net_file).resolve() == Path(scenario.net_file).resolve()
                and [Path(r).resolve() for r in registered.route_files]
                == [Path(r).resolve() for r in scenario.route_files]):
            where = {"network": scenario.name}
    return Experiment(
        name=name, **where, begin=scenario.begin, end=scenario.end,
        controllers=tuple(controllers), seeds=tuple(seeds), trips=trips,
        demand=Demand(mode=options.demand.mode, scale=options.demand.scale,
                      bin_s=options.demand.bin_s),
        signals=Signals(decision_interval=options.decision_interval,
                        min_green=options.min_green, max_green=options.max_green,
                        protocol=options.protocol, yellow=options.yellow,
                        all_red=options.all_red),
        sensors=Sensors(detector_length=options.detector_length, first_wait=options.first_wait,
                        faults=options.faults, cleaning=options.cleaning),
        training=training,
    )


def summary_of(runs: pd.DataFrame) -> pd.DataFrame:
    """The summary over seeds as ``compare`` shows it: one row per controller."""
    summary = summarize(runs)
    first = ["controller", "seeds", "mean_delay_s", "ci95_delay_s", "delay_vs_fixed_pct"]
    for kpi in SUMMARY_KPIS[1:]:
        first += [kpi, "ci95_" + kpi.removeprefix("mean_")]
    return summary[first].reset_index(drop=True)


def runs_of(rows: pd.DataFrame) -> pd.DataFrame:
    """Store rows as ``compare``'s runs: controller, seed, the KPIs and the wall time."""
    runs = rows[["controller", "seed", *KPI_NAMES, "wall_s"]].reset_index(drop=True)
    return runs.astype(dict.fromkeys(COUNTS, "int64"))


def compare(
    scenario: Scenario,
    controllers: Sequence[str],
    seeds: Sequence[int],
    options: SimulationOptions | None = None,
    *,
    folder: Path | None = None,
    executor: Executor | None = None,
    kind: str = "compare",
    overwrite: bool = False,
    on_step: Callable[[str, int, float], None] | None = None,
) -> Comparison:
    """Run every controller with every seed on the scenario; the same seeds for each.

    Args:
        scenario: The network, demand and horizon.
        controllers: Controller names, the reference first (:func:`validate_controllers`).
        seeds: SUMO seeds.
        options: How the scenario is simulated.
        folder: The results folder (default: a temporary one, removed at the end).
        executor: Where the runs run (default: one after another in this process).
        kind: ``compare`` or ``evaluate``, as the manifest names it.
        overwrite: Replace a comparison already in ``folder`` (:func:`layout.claim`).
        on_step: Called with (controller, seed, simulated time) after each decision step
            (in this process only).

    Returns:
        The comparison; if its results could not all be written (a full disk), the runs
        that finished, with :attr:`Comparison.error` saying what the folder kept.

    Raises:
        experiments.results.OutputError: The folder holds other results or cannot be
            written.
        Exception: A run that fails in this process raises its error.
    """
    if folder is not None:
        layout.claim(folder, kind, overwrite=overwrite)
    # the folder names the experiment, as it titles the folder's report
    name = (Path(folder).resolve().name if folder is not None else "") or kind
    plan = Sweep(experiment_of(scenario, controllers, seeds, options, name=name))
    if executor is None:
        hook = None if on_step is None else (lambda u, t: on_step(u.controller, u.seed, t))
        executor = InProcessExecutor(on_step=hook, raise_errors=True)
    started = time.perf_counter()
    with results.folder_or_temporary(folder, "compare") as where:
        try:
            result = execute(plan, where, executor=executor, retries=0, kind=kind,
                             overwrite=layout.replaces(where, ("compare", "evaluate")))
        except WriteFailed as err:
            rows = store.rows_frame(err.rows)
            kept = f"kept {err.kept} finished run(s) of {len(plan.units)} in {where / store.STORE}"
            return Comparison(scenario, runs_of(rows), summary_of(rows), plan.base.options,
                              error=f"{err}; {kept if folder is not None else 'nothing kept'}")
        if result.failures:
            failure = result.failures[0]
            raise SweepError(f"{failure['controller']} seed {failure['seed']} failed: "
                             f"{failure['error']}")
        comparison = Comparison(scenario, runs_of(result.runs), summary_of(result.runs),
                                plan.base.options)
        log = (f"greenphase {kind}: {len(comparison.runs)} runs in "
               f"{time.perf_counter() - started:.1f} s on {result.workers} {result.backend} "
               "worker(s)\n")
        if folder is not None:
            try:
                write(comparison, result.runs, where, log=log)
            except OSError as err:
                return dataclasses.replace(comparison, error=(
                    f"cannot write {err.filename or where}: {err.strerror or err}; kept all "
                    f"{len(comparison.runs)} runs in {where / store.STORE}"))
    return comparison


def write(comparison: Comparison, rows: pd.DataFrame, folder: Path, *, log: str = "") -> Path:
    """Write compare's own files beside the store: metrics, summary, trips, plot, log."""
    results.write_parquet(folder / "metrics.parquet", comparison.runs)
    frames = [store.read_trips(folder, r["trips"]) for r in rows.to_dict("records")]
    kept = [f.assign(controller=r["controller"], seed=r["seed"])
            for f, r in zip(frames, rows.to_dict("records")) if f is not None]
    if kept:
        results.write_parquet(folder / "trips.parquet", pd.concat(kept, ignore_index=True))
    plot_delay(comparison, folder / "plots" / "delay.png")
    return results.write_summary(folder, comparison.to_json(), log)


def plot_delay(comparison: Comparison, path: Path) -> Path:
    """Bar chart of mean delay per controller with its 95% CI."""
    plt = results.pyplot()
    s = comparison.summary
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    ax.bar(s["controller"], s["mean_delay_s"], yerr=s["ci95_delay_s"], capsize=4,
           color=["#888888"] + ["#2e7d32"] * (len(s) - 1))
    ax.set_ylabel("mean delay per vehicle (s)")
    sc = comparison.scenario
    ax.set_title(f"{sc.name}, {sc.begin}-{sc.end} s, {int(s['seeds'].max())} seeds (95% CI)")
    ax.grid(axis="y", alpha=0.3)
    return results.save_figure(fig, path)
