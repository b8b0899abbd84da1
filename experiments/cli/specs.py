"""``run``, ``sweep`` and ``report``: experiments from spec files, stored and reported."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from experiments.cli.choices import Backend
from experiments.cli.common import AllowLargeOpt, JsonOpt, out_console, user_errors
from experiments.gates import GateError
from experiments.limits import TooLargeError
from experiments.progress import SweepBar
from experiments.report import ReportError, summary_table
from experiments.spec import SpecError
from experiments.spec_checks import check_plan, check_size
from experiments.sweep import SweepError
from experiments.workflows import SpecOutcome, plan_spec, run_spec, spec_folder

SpecArg = Annotated[
    Path, typer.Argument(help="A spec file (TOML); examples in experiments/specs/.")]
WorkersOpt = Annotated[
    int | None, typer.Option("--workers", "-w", min=1,
                             help="Runs at a time (default: the CPU cores; Ray: the cluster's "
                                  "CPUs).")]
BackendOpt = Annotated[
    Backend, typer.Option("--backend", help="Where runs execute: a local process pool or Ray.")]
AddressOpt = Annotated[
    str | None, typer.Option("--address", help="A Ray cluster's address, e.g. 10.0.0.1:6379 "
                                               "(default: start a local Ray).")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Skip the runs the store holds.")]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Start again in a folder that holds a sweep.")]
RetriesOpt = Annotated[int, typer.Option("--retries", min=0, help="Retries of a failed run.")]
SpecOutOpt = Annotated[
    Path | None, typer.Option("--out", "-o", help="Results folder (default runs/<name>).")]
FailUnderOpt = Annotated[
    list[str] | None,
    typer.Option("--fail-under", help="A gate, [CONTROLLER:]METRIC OP NUMBER, e.g. "
                                      "'max-pressure:delay_vs_fixed_pct<=-20' (repeatable): "
                                      "exit 1 when a controller misses it."),
]


def _show(outcome: SpecOutcome, name: str, folder: Path, backend: str, json_out: bool) -> None:
    if json_out:
        typer.echo(json.dumps(outcome.to_json()))
        return
    result = outcome.result
    out_console.print(summary_table(
        result.summary, f"{name}: {result.finished} of {result.total} runs, "
                        f"{result.wall_s:.0f} s on {result.workers} {backend} worker(s)"))
    out_console.print(f"results: {folder}  report: {outcome.report}")


def spec_command(command: str, doc: str) -> Callable[..., None]:
    """The ``run`` or ``sweep`` command: the two differ only in what a spec may hold."""

    def run_spec_file(
        spec: SpecArg,
        workers: WorkersOpt = None,
        backend: BackendOpt = Backend["local"],
        address: AddressOpt = None,
        resume: ResumeOpt = False,
        overwrite: OverwriteOpt = False,
        retries: RetriesOpt = 2,
        out: SpecOutOpt = None,
        json_out: JsonOpt = False,
        fail_under: FailUnderOpt = None,
        allow_large: AllowLargeOpt = False,
    ) -> None:
        with user_errors(SpecError, SweepError, GateError, ReportError, TooLargeError):
            check_size(spec, allow_large=bool(allow_large))  # before expanding the points
            plan, gates = plan_spec(command, spec, fail_under or [])
            check_plan(plan, spec, allow_large=bool(allow_large))
            folder = spec_folder(plan, out)
            with SweepBar(command, plan.name) as bar:
                outcome = run_spec(command, plan, gates, folder, workers=workers,
                                   backend=backend.value, address=address, resume=resume,
                                   overwrite=overwrite, retries=retries,
                                   on_start=bar.on_start, on_result=bar.on_result)
        _show(outcome, plan.name, folder, backend.value, json_out)
        for verdict in outcome.failed_gates:
            typer.echo(verdict.line(), err=True)
        if outcome.result.failures:
            most = max(int(f.get("attempts", 1)) for f in outcome.result.failures)
            typer.echo(f"error: {len(outcome.result.failures)} run(s) failed (after at most "
                       f"{most} attempt(s); a failure of the input itself is not retried); "
                       f"see {outcome.report}", err=True)
        if outcome.failed_gates or outcome.result.failures:
            raise typer.Exit(1)

    run_spec_file.__name__ = command
    run_spec_file.__doc__ = doc
    return run_spec_file


run = spec_command(
    "run", "Run one experiment from a spec file: each controller over each seed, stored, reported.")
sweep = spec_command(
    "sweep", "Run a sweep: every point of the spec's axes, each controller and seed; resumable.")


def report(
    folder: Annotated[Path, typer.Argument(help="A results folder: a sweep's or a comparison's.")],
) -> None:
    """Write report.md and plots/*.png for a results folder and print its summary."""
    from experiments.report import load_runs, summarize, write_report

    with user_errors(ReportError):
        path = write_report(folder)
        summary = summarize(load_runs(folder))
    out_console.print(summary_table(summary, f"{folder}"))
    out_console.print(f"report: {path}")
