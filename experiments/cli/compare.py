"""``compare``, ``evaluate`` and ``robustness``: controllers side by side over seeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from agents.named import split_names
from experiments.cli.choices import Cleaning
from experiments.cli.common import (
    DEFAULT_PROTOCOL,
    CleaningOpt,
    DemandOpt,
    FaultsOpt,
    HeldOutSeedsOpt,
    JsonOpt,
    OutOpt,
    ProtocolOpt,
    RunArg,
    ScenarioOptions,
    note,
    out_console,
    positive,
    user_errors,
    with_scenario,
)
from experiments.compare import Comparison
from experiments.options import controller_names, dropout_rates
from experiments.progress import CompareBar, RobustnessBar
from experiments.workflows import (
    COMPARE_DEMAND,
    ComparePlan,
    plan_compare,
    plan_evaluation,
    plan_robustness,
    run_comparison,
    run_robustness,
)
from simulator.cleaning import CleaningError
from simulator.faults import FaultConfigError


def _fmt(mean: float, ci: float) -> str:
    return f"{mean:.1f} ± {ci:.1f}"


def comparison_table(summary: Any, title: str) -> Table:
    """The comparison as a table: means ± 95% CI over seeds."""
    table = Table(title=title)
    for col in ("controller", "seeds", "delay s", "travel time s", "waiting s",
                "throughput veh/h", "queue veh", "delay vs fixed"):
        table.add_column(col, justify="left" if col == "controller" else "right")
    for row in summary.to_dict("records"):
        vs = row["delay_vs_fixed_pct"]
        table.add_row(
            escape(row["controller"]), str(row["seeds"]),
            _fmt(row["mean_delay_s"], row["ci95_delay_s"]),
            _fmt(row["mean_travel_time_s"], row["ci95_travel_time_s"]),
            _fmt(row["mean_waiting_time_s"], row["ci95_waiting_time_s"]),
            _fmt(row["throughput_veh_h"], row["ci95_throughput_veh_h"]),
            _fmt(row["mean_queue_veh"], row["ci95_queue_veh"]),
            "—" if vs != vs else f"{vs:+.1f}%",
        )
    return table


OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="Replace the results of the same command in --out.")]


def _compare_plan(plan: ComparePlan, json_out: bool) -> None:
    """Run a comparison with a progress bar; print its JSON or its table."""
    if plan.reference_added:
        note("adding fixed timing as the reference")
    with CompareBar(plan.scenario, plan.runs, plan.decision_interval) as bar:
        comparison = run_comparison(plan, on_step=bar.on_step)
    _show(comparison, plan, json_out)
    if comparison.error:  # the table above holds the runs that finished
        typer.echo(f"error: {comparison.error}", err=True)
        raise typer.Exit(1)


def _show(comparison: Comparison, plan: ComparePlan, json_out: bool) -> None:
    if json_out:
        typer.echo(json.dumps(comparison.to_json()))
        return
    out_console.print(comparison_table(comparison.summary, plan.title))
    if not comparison.error:
        out_console.print(f"results: {plan.folder}")


@with_scenario
def compare(
    where: ScenarioOptions,
    controllers: Annotated[
        str, typer.Option("--controllers", "-c", help="Comma-separated controller names.")
    ] = "fixed,webster,actuated,max-pressure,sotl,random",
    seeds: Annotated[
        int, typer.Option("--seeds", "-s", min=1, help="Number of seeds (0..N-1).")
    ] = 3,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Results folder (default runs/...).")
    ] = None,
    json_out: JsonOpt = False,
    decision_interval: Annotated[
        float | None, typer.Option("--decision-interval", callback=positive,
                                   help="Seconds between decisions (> 0; default: the "
                                        "protocol's, 5).")
    ] = None,
    faults: FaultsOpt = "",
    cleaning: CleaningOpt = Cleaning["none"],
    demand: DemandOpt = COMPARE_DEMAND,
    protocol: ProtocolOpt = DEFAULT_PROTOCOL,
    overwrite: OverwriteOpt = False,
) -> None:
    """Run controllers on one network over seeds; print the table and write the results."""
    with user_errors(FaultConfigError, CleaningError):
        plan = plan_compare(where.scenario(), controller_names(controllers), seeds, out,
                            decision_interval=decision_interval, faults=faults,
                            cleaning=cleaning.value, demand=demand, protocol=protocol.value,
                            overwrite=overwrite)
        _compare_plan(plan, json_out)


@with_scenario
def evaluate(
    run: RunArg,
    where: ScenarioOptions,
    seeds: HeldOutSeedsOpt = 3,
    controllers: Annotated[
        str, typer.Option("--controllers", "-c", help="Others to compare with, comma-separated.")
    ] = "",
    out: OutOpt = None,
    json_out: JsonOpt = False,
    faults: FaultsOpt = "",
    cleaning: CleaningOpt = Cleaning["none"],
    demand: DemandOpt = COMPARE_DEMAND,
    protocol: ProtocolOpt = DEFAULT_PROTOCOL,
    overwrite: OverwriteOpt = False,
) -> None:
    """Evaluate a trained run over held-out seeds against fixed timing (and others)."""
    with user_errors(FaultConfigError, CleaningError):
        others = split_names(controllers)
        plan = plan_evaluation(run, where, others=others, seeds=seeds, out=out, faults=faults,
                               cleaning=cleaning.value, demand=demand, protocol=protocol.value,
                               overwrite=overwrite)
        _compare_plan(plan, json_out)


@with_scenario
def robustness(
    run: Annotated[Path, typer.Option("--run", help="A training run directory (or checkpoint).")],
    where: ScenarioOptions,
    rates: Annotated[
        str, typer.Option("--rates", help="Dropout rates, comma-separated, each in [0, 1).")
    ] = "0,0.1,0.2,0.3,0.4,0.5",
    seeds: HeldOutSeedsOpt = 3,
    faults: Annotated[str, typer.Option(
        "--faults", help="Other faults on at every rate, e.g. 'noise=0.1' (not dropout).")] = "",
    cleaning: CleaningOpt = Cleaning["none"],
    out: OutOpt = None,
    json_out: JsonOpt = False,
    demand: DemandOpt = "fixed",
    protocol: ProtocolOpt = DEFAULT_PROTOCOL,
    overwrite: OverwriteOpt = False,
) -> None:
    """Mean delay of fixed timing, max-pressure and a trained policy as sensor dropout rises."""
    from experiments.robustness import table

    with user_errors(FaultConfigError, CleaningError):
        plan = plan_robustness(run, where, rates=dropout_rates(rates), seeds=seeds,
                               faults=faults, cleaning=cleaning.value, out=out, demand=demand,
                               protocol=protocol.value, overwrite=overwrite)
        with RobustnessBar(f"robustness {plan.scenario.name}", plan.runs) as bar:
            result = run_robustness(plan, on_run=bar.on_run)
    if json_out:
        typer.echo(json.dumps(result.to_json()))
        return
    extra = ", ".join(p for p in (str(plan.base), f"cleaning {plan.cleaning}") if p)
    out_console.print(table(result, f"{plan.scenario.name}: mean delay by dropout, seeds "
                                    f"0-{seeds - 1}; {extra}"))
    out_console.print(f"results: {plan.folder}")
