"""``monitor``: a controller on a (drifting) scenario, its KPIs and drift watched per window."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from experiments.cli.common import (
    DemandOpt,
    JsonOpt,
    OutOpt,
    ScenarioOptions,
    out_console,
    positive,
    user_errors,
    with_scenario,
)
from experiments.cli.compare import OverwriteOpt
from experiments.cli.driftopts import DriftOpt, HoursOpt, drift_setup
from experiments.monitor import (
    MonitorPlan,
    MonitorResult,
    default_network,
    monitor_options,
    plan_monitor,
    run_monitor,
)
from experiments.progress import CompareBar
from experiments.workflows import COMPARE_DEMAND

ControllerOpt = Annotated[str, typer.Option(
    "--controller", "-c", help="The controller watched: a classic name, trained:RUN, "
                               "exported:FILE, tuned:DIR or module:Class.")]
WindowOpt = Annotated[float, typer.Option(
    "--window-min", callback=positive, help="Simulated minutes per window (> 0).")]
SeedsOpt = Annotated[int, typer.Option("--seeds", "-s", min=1, help="Evaluation seeds 0..N-1.")]


def _plan(where: ScenarioOptions, controller: str, drift: str, hours: float, seeds: int,
          window_min: float, demand: str, out: Path | None, overwrite: bool) -> MonitorPlan:
    base = where.scenario(default=default_network(controller))
    options = monitor_options(base, controller, demand)
    scenario, drifting = drift_setup(base, drift, hours, options,
                                     allow_large=bool(where.allow_large), runs=seeds)
    changes = drifting.drift.change_points() if drifting.drift is not None else []
    return plan_monitor(base, scenario, controller, seeds=seeds, base_options=options,
                        options=drifting, window_min=window_min, out=out, drift=drift,
                        change_points=changes, overwrite=overwrite)


def _table(result: MonitorResult) -> Table:
    table = Table(title=f"monitor {result.plan.base.name}, {result.plan.controller}: "
                        f"{result.plan.drift or 'stationary'}")
    for col in ("seed", "alarms", "false alarms", "first alarm after each change"):
        table.add_column(col, justify="left" if col.startswith("first") else "right")
    for row in result.verdict.per_seed:
        firsts = "; ".join(
            f"{c['change']}: " + (f"+{c['delay_s'] / 60:.0f} min ({c['detector']})"
                                  if c["delay_s"] is not None else "none")
            for c in row["changes"]) or "—"
        table.add_row(str(row["seed"]), str(row["alarms"]), str(row["false_alarms"]),
                      escape(firsts))
    return table


@with_scenario
def monitor(
    where: ScenarioOptions,
    controller: ControllerOpt = "max-pressure",
    drift: DriftOpt = "",
    hours: HoursOpt = 8.0,
    seeds: SeedsOpt = 1,
    window_min: WindowOpt = 5.0,
    demand: DemandOpt = COMPARE_DEMAND,
    out: OutOpt = None,
    json_out: JsonOpt = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Run a controller on a scenario with drift; KPIs, drift score and alarms per window."""
    with user_errors():
        plan = _plan(where, controller, drift, hours, seeds, window_min, demand, out,
                     overwrite)
        with CompareBar(plan.scenario, len(plan.seeds), plan.options.decision_interval) as bar:
            result = run_monitor(plan, on_step=bar.on_step)
    if json_out:
        typer.echo(json.dumps(result.to_json()))
        return
    out_console.print(_table(result))
    out_console.print(f"results: {plan.folder}")
