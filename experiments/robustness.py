"""Robustness to sensor dropout: how mean delay grows as roadside readings go missing.

For each dropout rate (the probability that a detector's reading is lost at a
decision step, :class:`simulator.faults.FaultConfig`), fixed timing,
max-pressure and a trained policy run over the same seeds, with the same
faults on the same sensors at each seed. Other faults (``base``, e.g.
``noise=0.1``) stay on at every rate, and a cleaning method
(:mod:`simulator.cleaning`) may fill in the missing readings before the
controllers see them. Fixed timing reads no sensor, so its line is the flat
reference.

The results folder holds ``spec.toml``, ``metrics.parquet`` (one row per
run), ``robustness.csv`` (one row per rate and controller: mean delay and its
95% CI over seeds, and the change from the same controller without dropout),
``summary.json`` (the ``--json`` document), ``plots/robustness.png`` and
``log.txt``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from agents import Controller, make_controller
from experiments import results
from experiments.compare import SUMMARY_KPIS
from experiments.runner import run_episode
from experiments.stats import mean_ci95
from networks import Scenario
from simulator.cleaning import sensor_model
from simulator.faults import FaultConfig, FaultConfigError
from simulator.metrics import KPI_NAMES

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

    def to_json(self) -> dict[str, Any]:
        """The ``robustness --json`` document."""
        def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
            return [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]

        return {
            "network": self.scenario.name,
            "begin_s": self.scenario.begin,
            "end_s": self.scenario.end,
            "controllers": self.controllers,
            "faults": str(self.base),
            "cleaning": self.cleaning,
            "runs": records(self.runs),
            "summary": records(self.summary),
        }


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def dropout_configs(rates: Sequence[float], base: FaultConfig) -> list[FaultConfig]:
    """One fault configuration per rate: ``base`` with that dropout.

    Raises:
        FaultConfigError: a rate outside [0, 1), no rate, or ``base`` that sets dropout.
    """
    if not rates:
        raise FaultConfigError("no dropout rate given")
    if base.dropout:
        raise FaultConfigError("the base faults must not set dropout: the rates sweep it")
    return [dataclasses.replace(base, dropout=float(r)) for r in rates]


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% CI over seeds per (dropout, controller); change from no dropout in %."""
    rows = []
    for (dropout, controller), group in runs.groupby(["dropout", "controller"], sort=False):
        row: dict[str, Any] = {"dropout": dropout, "controller": controller, "seeds": len(group)}
        for kpi in SUMMARY_KPIS:
            mean, ci = mean_ci95(group[kpi].tolist())
            row[kpi] = mean
            row["ci95_" + kpi.removeprefix("mean_")] = ci
        rows.append(row)
    summary = pd.DataFrame(rows)
    clean = summary[summary["dropout"] == 0.0].set_index("controller")["mean_delay_s"]
    reference = summary["controller"].map(clean)
    summary["delay_vs_no_dropout_pct"] = (summary["mean_delay_s"] / reference - 1.0) * 100.0
    first = ["dropout", "controller", "seeds", "mean_delay_s", "ci95_delay_s",
             "delay_vs_no_dropout_pct"]
    return summary[first + [c for c in summary.columns if c not in first]]


def robustness(
    scenario: Scenario,
    trained: str | Controller,
    rates: Sequence[float],
    seeds: Sequence[int],
    *,
    base: FaultConfig | None = None,
    cleaning: str = "none",
    on_run: Callable[[float, str, int], None] | None = None,
    **run_options: Any,
) -> Robustness:
    """Run fixed timing, max-pressure and ``trained`` at every dropout rate over ``seeds``.

    Args:
        scenario: the network and horizon.
        trained: the learned controller (``trained:RUN`` or a controller object).
        rates: dropout rates, each in [0, 1).
        seeds: SUMO seeds; the faults are drawn from them too.
        base: other faults, on at every rate.
        cleaning: ``none``, ``last`` or ``zero-flag`` (:mod:`simulator.cleaning`).
        on_run: called with (rate, controller, seed) after each run.
        **run_options: passed to :func:`experiments.runner.run_episode`.

    Raises:
        FaultConfigError: a rate or a base fault out of range.
        CleaningError: an unknown cleaning method.
    """
    base = base or FaultConfig()
    configs = dropout_configs(rates, base)
    models = [sensor_model(config, cleaning) for config in configs]
    learned = make_controller(trained) if isinstance(trained, str) else trained
    controllers: list[Controller] = [make_controller(name) for name in CLASSIC] + [learned]
    rows = []
    for config, model in zip(configs, models, strict=True):
        for ctrl in controllers:
            for seed in seeds:
                result = run_episode(scenario, ctrl, seed, sensor_model=model, **run_options)
                rows.append({"dropout": config.dropout, **result.row()})
                if on_run is not None:
                    on_run(config.dropout, ctrl.name, seed)
    runs = pd.DataFrame(rows)[["dropout", "controller", "seed", *KPI_NAMES, "wall_s"]]
    return Robustness(scenario, [c.name for c in controllers], base, cleaning, runs,
                      summarize(runs))


def write(result: Robustness, folder: Path, *, log: str = "") -> Path:
    """Write the results folder (see the module's text)."""
    sc = result.scenario
    spec = {
        "command": "robustness", "network": sc.name, "net_file": str(sc.net_file),
        "route_files": [str(r) for r in sc.route_files], "begin": sc.begin, "end": sc.end,
        "controllers": result.controllers,
        "rates": sorted({float(r) for r in result.runs["dropout"]}),
        "seeds": sorted({int(s) for s in result.runs["seed"]}),
        "faults": str(result.base), "cleaning": result.cleaning,
    }
    results.write_text(folder / "spec.toml", results.to_toml(spec))
    results.write_parquet(folder / "metrics.parquet", result.runs)
    results.atomic_write(folder / "robustness.csv",
                         lambda tmp: result.summary.to_csv(tmp, index=False))
    doc = result.to_json()
    doc["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results.write_json(folder / "summary.json", doc)
    plot(result, folder / "plots" / "robustness.png")
    if log:
        results.write_text(folder / "log.txt", log)
    return folder


def plot(result: Robustness, path: Path) -> Path:
    """Mean delay against dropout rate: one line per controller, its 95% CI as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    results.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


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
