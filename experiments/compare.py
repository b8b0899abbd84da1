"""Comparing controllers on one scenario: same demand, same seeds, same horizon for each."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from agents import make_controller
from experiments import results
from experiments.runner import RunResult, run_episode
from experiments.stats import mean_ci95
from networks import Scenario
from simulator.metrics import KPI_NAMES

REFERENCE = "fixed"
"""The controller every other is measured against."""

SUMMARY_KPIS = (
    "mean_delay_s",
    "mean_travel_time_s",
    "mean_waiting_time_s",
    "throughput_veh_h",
    "mean_queue_veh",
)


@dataclass(frozen=True)
class Comparison:
    """Runs and their summary over seeds."""

    scenario: Scenario
    runs: pd.DataFrame
    """One row per (controller, seed): the KPIs and the wall time."""
    summary: pd.DataFrame
    """One row per controller: means and 95% CIs over seeds, delay versus fixed in %."""

    def to_json(self) -> dict[str, Any]:
        """The ``compare --json`` document of DESIGN.md."""
        runs = [
            {k: _plain(v) for k, v in row.items()} for row in self.runs.to_dict("records")
        ]
        summary = [
            {k: _plain(v) for k, v in row.items()} for row in self.summary.to_dict("records")
        ]
        return {
            "network": self.scenario.name,
            "begin_s": self.scenario.begin,
            "end_s": self.scenario.end,
            "runs": runs,
            "summary": summary,
        }


def _plain(value: Any) -> Any:
    """NumPy scalars as Python numbers; NaN as None (JSON has no NaN)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def validate_controllers(names: Sequence[str]) -> list[str]:
    """Check every name (raises on an unknown one); put the fixed-time reference first."""
    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not names:
        raise ValueError("no controller given")
    for name in names:
        make_controller(name)
    if REFERENCE in names:
        names.remove(REFERENCE)
    return [REFERENCE, *names]


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% CI over seeds for each controller, and delay versus fixed timing in %."""
    rows = []
    for controller, group in runs.groupby("controller", sort=False):
        row: dict[str, Any] = {"controller": controller, "seeds": len(group)}
        for kpi in SUMMARY_KPIS:
            mean, ci = mean_ci95(group[kpi].tolist())
            row[kpi] = mean
            row["ci95_" + kpi.removeprefix("mean_")] = ci
        rows.append(row)
    summary = pd.DataFrame(rows)
    ref = summary.loc[summary["controller"] == REFERENCE, "mean_delay_s"]
    if len(ref) and ref.iloc[0] > 0:
        summary["delay_vs_fixed_pct"] = (summary["mean_delay_s"] / ref.iloc[0] - 1.0) * 100.0
    else:
        summary["delay_vs_fixed_pct"] = float("nan")
    first = ["controller", "seeds", "mean_delay_s", "ci95_delay_s", "delay_vs_fixed_pct"]
    return summary[first + [c for c in summary.columns if c not in first]]


def compare(
    scenario: Scenario,
    controllers: Sequence[str],
    seeds: Sequence[int],
    *,
    on_step: Callable[[str, int, float], None] | None = None,
    **run_options: Any,
) -> tuple[Comparison, list[RunResult]]:
    """Run every controller with every seed on the scenario; the same seeds for each."""
    finished: list[RunResult] = []
    for controller in controllers:
        for seed in seeds:
            hook = None
            if on_step is not None:
                hook = (lambda c, s: lambda t: on_step(c, s, t))(controller, seed)
            finished.append(run_episode(scenario, controller, seed, on_step=hook, **run_options))
    runs = pd.DataFrame([r.row() for r in finished])
    runs = runs[["controller", "seed", *KPI_NAMES, "wall_s"]]
    return Comparison(scenario, runs, summarize(runs)), finished


def spec_of(scenario: Scenario, controllers: Sequence[str], seeds: Sequence[int],
            options: dict[str, Any]) -> dict[str, Any]:
    """The resolved experiment, as written to ``spec.toml``."""
    return {
        "command": "compare",
        "network": scenario.name,
        "net_file": str(scenario.net_file),
        "route_files": [str(r) for r in scenario.route_files],
        "begin": scenario.begin,
        "end": scenario.end,
        "controllers": list(controllers),
        "seeds": list(seeds),
        "simulation": options,
    }


def write(
    comparison: Comparison,
    finished: Sequence[RunResult],
    folder: Path,
    spec: dict[str, Any],
    *,
    trips: bool = True,
    log: str = "",
) -> Path:
    """Write the results layout: spec.toml, metrics.parquet, summary.json, trips, plots, log."""
    results.write_text(folder / "spec.toml", results.to_toml(spec))
    results.write_parquet(folder / "metrics.parquet", comparison.runs)
    if trips:
        frames = [r.trips.assign(controller=r.controller, seed=r.seed) for r in finished]
        results.write_parquet(folder / "trips.parquet", pd.concat(frames, ignore_index=True))
    doc = comparison.to_json()
    doc["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results.write_json(folder / "summary.json", doc)
    plot_delay(comparison, folder / "plots" / "delay.png")
    if log:
        results.write_text(folder / "log.txt", log)
    return folder


def plot_delay(comparison: Comparison, path: Path) -> Path:
    """Bar chart of mean delay per controller with its 95% CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = comparison.summary
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    ax.bar(s["controller"], s["mean_delay_s"], yerr=s["ci95_delay_s"], capsize=4,
           color=["#888888"] + ["#2e7d32"] * (len(s) - 1))
    ax.set_ylabel("mean delay per vehicle (s)")
    sc = comparison.scenario
    ax.set_title(f"{sc.name}, {sc.begin}-{sc.end} s, {int(s['seeds'].max())} seeds (95% CI)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    results.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path
