"""What the commands share: option types, one line for every error, the consoles.

Bad input is one line ``error: ...`` and exit status 2; a run that fails while it
runs, one line and 1; an interrupt (Ctrl-C, SIGTERM), one line ``interrupted: ...``
saying what was kept, and 130.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from agents import CheckpointError, TrainedPolicyError, UnknownControllerError
from experiments import results
from experiments.cli.choices import Cleaning, Protocol
from experiments.executor import RunFailed
from experiments.options import BadInput, ScenarioOptions
from experiments.progress import err_console, note, out_console
from networks import NetworkError
from simulator import ProgramError, SumoError
from simulator.sumo import SimulationFailed

__all__ = ["BadInput", "ScenarioOptions", "err_console", "note", "out_console"]

USER_ERRORS = (
    NetworkError, UnknownControllerError, ProgramError, SumoError, results.OutputError,
    CheckpointError, TrainedPolicyError,
)
"""The library's errors that mean bad input rather than a bug."""

RUN_ERRORS = (RunFailed, SimulationFailed, results.WriteFailed)
"""The library's errors of a run that failed while it ran (exit status 1)."""

INTERRUPTED = {
    **dict.fromkeys(("sweep", "run"), "the runs that finished are in the results folder's "
                                      "store; the same command with --resume continues"),
    "train": "the checkpoints of the finished episodes are in the run folder; the same "
             "command with --resume continues",
    **dict.fromkeys(("compare", "evaluate", "robustness", "study"),
                    "no summary was written; the runs that finished are in the results "
                    "folder's store"),
    "benchmark": "the stages that finished are in the benchmark folder (benchmark.json); the "
                 "same command with --resume continues",
    "adapt": "the versions that finished are in the output folder (versions/, adapt.json)",
}
"""What an interrupted command kept, by command."""


def first_line(message: str, default: str) -> str:
    """The first line of a message (``default`` when it is empty)."""
    text = message.strip()
    return text.splitlines()[0] if text else default


def whole(message: str, default: str) -> str:
    """A message whole, on one line (``default`` when it is empty): the line may wrap."""
    return " ".join(line.strip() for line in message.splitlines() if line.strip()) or default


@contextlib.contextmanager
def user_errors(*more: type[Exception]) -> Iterator[None]:
    """Bad input: one line on stderr and exit status 2; a run that failed: 1. No traceback."""
    caught: tuple[type[BaseException], ...] = (BadInput, *USER_ERRORS, *more)
    try:
        yield
    except RUN_ERRORS as err:
        typer.echo(f"error: {whole(str(err), type(err).__name__)}", err=True)
        raise typer.Exit(1) from None
    except caught as err:
        typer.echo(f"error: {whole(str(err), type(err).__name__)}", err=True)
        raise typer.Exit(2) from None


@contextlib.contextmanager
def interrupts(command: str | None) -> Iterator[None]:
    """Ctrl-C or SIGTERM: one line saying what ``command`` kept, and exit status 130."""
    try:
        yield
    except KeyboardInterrupt:
        kept = INTERRUPTED.get(command or "", "nothing more was written")
        typer.echo(f"interrupted: {kept}", err=True)
        raise typer.Exit(130) from None


@contextlib.contextmanager
def _one_line_usage_errors() -> Iterator[None]:
    try:
        yield
    except typer.TyperException as err:  # typer's click: usage errors and bad parameters
        message = first_line(err.format_message(), "bad usage").replace(": Value error, ", ": ")
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(getattr(err, "exit_code", 2)) from None


class OneLineErrors(TyperGroup):
    """A command group whose usage errors are one line ``error: ...`` with status 2.

    Click would print the usage, a hint and a framed message; a bad option value,
    unknown option or missing argument anywhere below this group is one line instead,
    under the console script and under a test's ``CliRunner`` alike.
    """

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None,
                     **extra: Any) -> Any:
        with _one_line_usage_errors():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        with _one_line_usage_errors():
            try:
                return super().invoke(ctx)
            except KeyboardInterrupt:
                # the command is known once the group has resolved it
                with interrupts(ctx.invoked_subcommand):
                    raise


def positive(value: float | None) -> float | None:
    """Refuse a number that is not above 0 (typer's ``min`` includes the bound)."""
    if value is not None and not value > 0:  # NaN too
        raise typer.BadParameter(f"Input should be a number greater than 0, got {value:g}")
    return value


# ------------------------------------------------------------------ options
NetworkOpt = Annotated[
    str | None,
    typer.Option("--network", "-n", help="Registered network (see `networks list`) or grid-RxC."),
]
NetOpt = Annotated[Path | None, typer.Option("--net", help="A SUMO .net.xml of your own.")]
RoutesOpt = Annotated[
    list[Path] | None, typer.Option("--routes", help="Route file(s) for --net (repeatable).")
]
BeginOpt = Annotated[int | None, typer.Option("--begin", help="Simulated start time in s.")]
EndOpt = Annotated[int | None, typer.Option("--end", help="Simulated end time in s.")]
AllowLargeOpt = Annotated[bool | None, typer.Option(
    "--allow-large", help="Run work above the sane limits: a horizon over a day, a spec of "
                          "over 2,000 runs, a network of over 10 M parameters.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
FaultsOpt = Annotated[str, typer.Option(
    "--faults", help="Sensor faults the controllers see, e.g. 'dropout=0.2,noise=0.1' (kinds: "
                     "noise, dropout, stuck, stuck_steps, latency, failure, seed).")]
CleaningOpt = Annotated[Cleaning, typer.Option(
    "--cleaning", help="Fill in missing readings before the controllers.")]
DemandOpt = Annotated[str, typer.Option(
    "--demand", help="The traffic: fixed (the route files as they are) or resample (a new "
                     "draw per seed), with scale=X or bin_s=S, e.g. 'resample,scale=1.2'.")]
ProtocolOpt = Annotated[Protocol, typer.Option(
    "--protocol", help="A benchmark's decision interval, yellow, all-red, greens and "
                       "detector range; explicit options win.")]
DEFAULT_PROTOCOL = Protocol["greenphase"]
HeldOutSeedsOpt = Annotated[
    int, typer.Option("--seeds", "-s", min=1, help="Held-out seeds 0..N-1.")]
RunArg = Annotated[Path, typer.Argument(help="A training run directory (or a checkpoint).")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Results folder.")]


def _keyword(name: str, annotation: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=annotation)


SCENARIO_OPTIONS = (
    _keyword("network", NetworkOpt), _keyword("net", NetOpt), _keyword("routes", RoutesOpt),
    _keyword("begin", BeginOpt), _keyword("end", EndOpt), _keyword("allow_large", AllowLargeOpt),
)
"""The options that name a scenario, as :func:`with_scenario` gives them to a command."""


def with_scenario(command: Callable[..., None]) -> Callable[..., None]:
    """The command with ``--network``, ``--net``, ``--routes``, ``--begin`` and ``--end``.

    Seven commands take these five options. Such a command declares one parameter
    ``where: ScenarioOptions`` in their place; typer sees the five options there,
    and the command is called with them gathered into ``where``.
    """
    signature = inspect.signature(command, eval_str=True)

    @functools.wraps(command)
    def gathered(**options: Any) -> None:
        where = ScenarioOptions(**{p.name: options.pop(p.name) for p in SCENARIO_OPTIONS})
        command(where=where, **options)

    parameters: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        parameters += (SCENARIO_OPTIONS if parameter.name == "where"
                       else [parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY)])
    gathered.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return gathered
