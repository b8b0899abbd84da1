"""Robustness to sensor dropout: how mean delay grows as roadside readings go missing.

For each dropout rate (the probability that a detector's reading is lost at a
decision step, :class:`simulator.faults.FaultConfig`), fixed timing,
max-pressure and a trained policy run over the same seeds, with the same
faults on the same sensors at each seed. Other faults (``base``, e.g.
``noise=0.1``) stay on at every rate, and a cleaning method
(:mod:`simulator.cleaning`) may fill in the missing readings before the
controllers see them. Fixed timing reads no sensor, so its line is the flat
reference.

The study is a sweep over ``sensors.faults`` (:func:`plan_of`) through the one
pipeline (:func:`experiments.sweep.execute`) into the one results layout
(``manifest.json``, ``spec.toml``, ``store/``), plus ``metrics.parquet`` (one row per
run), ``robustness.csv`` (one row per rate and controller: mean delay and its 95% CI
over seeds, and the change from the same controller without dropout),
``summary.json`` (the ``--json`` document), ``plots/robustness.png`` and ``log.txt``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from experiments import layout, results
from experiments.compare import conditions, document, experiment_of
from experiments.executor import Executor, InProcessExecutor
from experiments.spec import Sweep
from experiments.summary import SUMMARY_KPIS, summarize
from experiments.sweep import execute
from networks import Scenario
from simulator.cleaning import sensor_model
from simulator.faults import FaultConfig, FaultConfigError
from simulator.metrics import KPI_NAMES
from simulator.options import SimulationOptions

CLASSIC = ("fixed", "max-pressure")
"""The classic controllers every trained policy is shown against."""

COLORS = {"fixed": "#888888", "max-pressure": "#1565c0"}
TRAINED_COLOR = "#2e7d32"


@dataclass(frozen=True)
class Robustness:
    """Runs over dropout rates and their summary."""

    scenario: Scenario
    controllers: list[str]
    """In plot and table order: fixed, max-pressure, the trained policy."""
    base: FaultConfig
    """Faults on at every rate besides dropout."""
    cleaning: str
    """How missing readings were filled in before the controllers."""
    runs: pd.DataFrame
    """One row per (dropout, controller, seed): the KPIs and the wall time."""
    summary: pd.DataFrame
    """One row per (dropout, controller): mean delay and its 95% CI, change without dropout."""
    options: SimulationOptions = SimulationOptions()
    """How the runs were simulated (their demand and protocol)."""

    def to_json(self) -> dict[str, Any]:
        """The ``robustness --json`` document."""
        return document(self.scenario, self.runs, self.summary, **conditions(self.options),
                        controllers=self.controllers, faults=str(self.base),
                        cleaning=self.cleaning)


def dropout_configs(rates: Sequence[float], base: FaultConfig) -> list[FaultConfig]:
    """One fault configuration per rate: ``base`` with that dropout.

    Raises:
        FaultConfigError: a rate outside [0, 1), no rate, or ``base`` that sets dropout.
    """
    if not rates:
        raise FaultConfigError("no dropout rate given")
    if base.dropout:
        raise FaultConfigError("the base faults must not set dropout: the rates sweep it")
    return [base.replace(dropout=float(r)) for r in rates]


def plan_of(scenario: Scenario, trained: str, rates: Sequence[float], seeds: Sequence[int], *,
            base: FaultConfig | None = None, cleaning: str = "none",
            options: SimulationOptions | None = None, name: str = "robustness") -> Sweep:
    """The robustness study as a sweep: the three controllers over ``sensors.faults``.

    Raises:
        FaultConfigError: a rate or a base fault out of range.
        CleaningError: an unknown cleaning method.
    """
    base = base or FaultConfig()
    configs = dropout_configs(rates, base)
    sensor_model(base, cleaning)  # an unknown cleaning method fails here, before any run
    options = SimulationOptions.of(options, faults=str(base), cleaning=cleaning)
    experiment = experiment_of(scenario, [*CLASSIC, trained], seeds, options, name=name)
    return Sweep(experiment, grid=(("sensors.faults", tuple(str(c) for c in configs)),))


def _dropout(cell: str) -> float:
    """The dropout rate of a cell label, ``faults=dropout=0.3,noise=0.1``."""
    return FaultConfig.parse(cell.removeprefix("faults=").strip('"')).dropout


def summary_of(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% CI over seeds per (dropout, controller); change from no dropout in %."""
    summary = summarize(rows)
    summary.insert(0, "dropout", summary["cell"].map(_dropout))
    clean = summary[summary["dropout"] == 0.0].set_index("controller")["mean_delay_s"]
    reference = summary["controller"].map(clean)
    summary["delay_vs_no_dropout_pct"] = (summary["mean_delay_s"] / reference - 1.0) * 100.0
    first = ["dropout", "controller", "seeds", "mean_delay_s", "ci95_delay_s",
             "delay_vs_no_dropout_pct"]
    for kpi in SUMMARY_KPIS[1:]:
        first += [kpi, "ci95_" + kpi.removeprefix("mean_")]
    return summary[first].reset_index(drop=True)


def robustness(
    scenario: Scenario,
    trained: str,
    rates: Sequence[float],
    seeds: Sequence[int],
    *,
    base: FaultConfig | None = None,
    cleaning: str = "none",
    on_run: Callable[[float, str, int], None] | None = None,
    options: SimulationOptions | None = None,
    folder: Path | None = None,
    executor: Executor | None = None,
) -> Robustness:
    """Run fixed timing, max-pressure and ``trained`` at every dropout rate over ``seeds``.

    Args:
        scenario: the network and horizon.
        trained: the learned controller, ``trained:RUN``.
        rates: dropout rates, each in [0, 1).
        seeds: SUMO seeds; the faults are drawn from them too.
        base: other faults, on at every rate.
        cleaning: ``none``, ``last`` or ``zero-flag`` (:mod:`simulator.cleaning`).
        on_run: called with (rate, controller, seed) after each run.
        options: the simulation settings; the faults and cleaning are set per rate.
        folder: the results folder (default: a temporary one, removed at the end).
        executor: where the runs run (default: one after another in this process).

    Raises:
        FaultConfigError: a rate or a base fault out of range.
        CleaningError: an unknown cleaning method.
    """
    base = base or FaultConfig()
    name = (Path(folder).resolve().name if folder is not None else "") or "robustness"
    plan = plan_of(scenario, trained, rates, seeds, base=base, cleaning=cleaning,
                   options=options, name=name)

    def on_result(unit: Any, row: dict[str, Any], retry: bool) -> None:
        if on_run is not None and row["status"] == "ok":
            on_run(_dropout(unit.cell), unit.controller, unit.seed)

    started = time.perf_counter()
    with results.folder_or_temporary(folder, "robustness") as where:
        done = execute(plan, where, executor=executor or InProcessExecutor(raise_errors=True),
                       retries=0, kind="robustness", on_result=on_result,
                       overwrite=layout.replaces(where, ("robustness",)),
                       manifest={"trained": trained, "rates": [float(r) for r in rates],
                                 "faults": str(base), "cleaning": cleaning})
        rows = done.runs
        runs = rows[["controller", "seed", *KPI_NAMES, "wall_s"]].reset_index(drop=True)
        runs.insert(0, "dropout", rows["cell"].map(_dropout).to_numpy())
        runs = runs.astype(dict.fromkeys(("vehicles", "unfinished", "not_inserted"), "int64"))
        result = Robustness(scenario, list(plan.base.run_controllers), base, cleaning, runs,
                            summary_of(rows), plan.base.options)
        if folder is not None:
            write(result, where, log=f"greenphase robustness: {len(runs)} runs in "
                                     f"{time.perf_counter() - started:.1f} s\n")
    return result


def write(result: Robustness, folder: Path, *, log: str = "") -> Path:
    """Write robustness's own files beside the store (see the module's text)."""
    results.write_parquet(folder / "metrics.parquet", result.runs)
    results.atomic_write(folder / "robustness.csv",
                         lambda tmp: result.summary.to_csv(tmp, index=False))
    plot(result, folder / "plots" / "robustness.png")
    return results.write_summary(folder, result.to_json(), log)


def plot(result: Robustness, path: Path) -> Path:
    """Mean delay against dropout rate: one line per controller, its 95% CI as a band."""
    plt = results.pyplot()
    s = result.summary
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for name in result.controllers:
        mine = s[s["controller"] == name].sort_values("dropout")
        x = mine["dropout"] * 100.0
        color = COLORS.get(name, TRAINED_COLOR)
        ax.plot(x, mine["mean_delay_s"], "o-", color=color, label=name)
        ax.fill_between(x, mine["mean_delay_s"] - mine["ci95_delay_s"],
                        mine["mean_delay_s"] + mine["ci95_delay_s"], color=color, alpha=0.2)
    ax.set_xlabel("sensor readings lost (dropout, %)")
    ax.set_ylabel("mean delay per vehicle (s)")
    sc = result.scenario
    extra = ", ".join(p for p in (str(result.base), f"cleaning {result.cleaning}") if p)
    ax.set_title(f"{sc.name}, {int(s['seeds'].max())} seeds (95% CI); {extra}", fontsize=10)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    return results.save_figure(fig, path)


def table(result: Robustness, title: str) -> Any:
    """The summary as a rich table: one row per dropout rate, one column per controller."""
    from rich.table import Table

    out = Table(title=title)
    out.add_column("dropout", justify="right")
    for name in result.controllers:
        out.add_column(f"{name} delay s", justify="right")
    s = result.summary
    for dropout, group in s.groupby("dropout", sort=False):
        by = group.set_index("controller")
        cells = []
        for name in result.controllers:
            row = by.loc[name]
            change = row["delay_vs_no_dropout_pct"]
            vs = "" if math.isnan(change) or dropout == 0 else f" ({change:+.0f}%)"
            cells.append(f"{row['mean_delay_s']:.1f} ± {row['ci95_delay_s']:.1f}{vs}")
        out.add_row(f"{float(dropout):.0%}", *cells)
    return out
