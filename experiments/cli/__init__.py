"""The ``greenphase`` command line: thin commands that parse, call one library function, print.

One module per group of commands; this one builds the application from them. A bad
value anywhere (an option out of range, an unknown choice, a missing file) is one
line ``error: ...`` on stderr and exit status 2; an interrupt, Ctrl-C or SIGTERM,
one line ``interrupted: ...`` and 130 (:mod:`experiments.cli.common`).
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

import typer

from experiments.cli import (
    adapt,
    bench,
    benchmark,
    compare,
    monitor,
    networks,
    replay,
    specs,
    train,
    tune,
)
from experiments.cli.common import OneLineErrors
from networks import scratch

__all__ = ["app", "main"]

app = typer.Typer(
    cls=OneLineErrors,
    help="greenphase: adaptive traffic signals on real road networks in SUMO, compared honestly.",
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=False,
)
networks_app = typer.Typer(help="The scenario registry.", add_completion=False,
                           pretty_exceptions_enable=False)
app.add_typer(networks_app, name="networks")

app.command()(compare.compare)
app.command()(train.train)
app.command()(compare.evaluate)
app.command()(compare.robustness)
app.command()(train.study)
app.command()(bench.bench)
app.command()(benchmark.benchmark)
app.command()(replay.replay)
app.command("run")(specs.run)
app.command("sweep")(specs.sweep)
app.command()(specs.report)
app.command("bench-sweep")(bench.bench_sweep)
app.command()(train.export)
app.command()(tune.tune)
app.command()(monitor.monitor)
app.command()(adapt.adapt)
app.command("adapt-check")(adapt.adapt_check)
networks_app.command("list")(networks.networks_list)
networks_app.command("generate")(networks.networks_generate)
networks_app.command("show")(networks.networks_show)


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a command as Ctrl-C does: cleaned up, one line


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGTERM, _terminated)
    try:
        scratch.remove_stale()  # what killed runs left
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted: nothing more was written", err=True)
        sys.exit(130)
