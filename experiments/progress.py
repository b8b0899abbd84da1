"""Progress on the terminal: the consoles, and bars fed by the pipelines' callbacks.

Each bar is a context manager on stderr that disappears when its block ends; its
methods have the signatures of the ``on_step``/``on_run``/``on_episode``/``on_result``
callbacks the library functions take, and turn them into counts and descriptions.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

if TYPE_CHECKING:
    from networks import Scenario

# piped output (CI logs, files) gets a width that fits the comparison table
out_console = Console(width=None if sys.stdout.isatty() else 160)
"""Tables and results, on stdout."""
err_console = Console(stderr=True)
"""Progress and notes, on stderr."""


def note(message: str) -> None:
    """A dim line on stderr, e.g. a benchmark's progress."""
    err_console.print(f"[dim]{message}[/dim]")


class Bar:
    """One transient bar on stderr: ``with Bar("compare", 12) as bar: ... bar.advance()``."""

    def __init__(self, description: str, total: float | None, *,
                 remaining: bool = False) -> None:
        columns: list[ProgressColumn] = [
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(),
        ]
        if remaining:
            columns += [TextColumn("left"), TimeRemainingColumn()]
        # off a terminal a transient bar shows nothing but would leave an empty line
        self.progress = Progress(*columns, console=err_console, transient=True,
                                 disable=not err_console.is_terminal)
        self.description = description
        self.total = total
        self.task = TaskID(0)

    def __enter__(self) -> Self:
        self.progress.__enter__()
        self.task = self.progress.add_task(self.description, total=self.total)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.progress.__exit__(kind, error, trace)

    def update(self, **changes: Any) -> None:
        """Change the bar: ``completed``, ``total``, ``advance``, ``description``."""
        self.progress.update(self.task, **changes)

    def advance(self, description: str | None = None) -> None:
        """One more done, with a new description when given."""
        if description is None:
            self.progress.advance(self.task)
        else:
            self.update(advance=1, description=description)


class CompareBar(Bar):
    """Runs done, and a second bar for the simulated time of the current run."""

    def __init__(self, scenario: Scenario, runs: int, decision_interval: float) -> None:
        super().__init__(scenario.name, runs)
        self.scenario = scenario
        self.decision_interval = decision_interval
        self.sub = TaskID(0)

    def __enter__(self) -> Self:
        super().__enter__()
        steps = -(-self.scenario.horizon_s // self.decision_interval)
        self.sub = self.progress.add_task("", total=steps)
        return self

    def on_step(self, controller: str, seed: int, t: float) -> None:
        """:func:`experiments.compare.compare`'s ``on_step``: a decision at time ``t``."""
        done = (t - self.scenario.begin) / self.decision_interval
        self.progress.update(self.sub, completed=done,
                             description=escape(f"  {controller} seed {seed}"))
        if t >= self.scenario.end:
            self.advance()


class TrainBar(Bar):
    """Episodes done, with the last one's return, delay and learning rate."""

    def on_episode(self, row: dict[str, Any]) -> None:
        """:func:`experiments.train.train`'s ``on_episode``."""
        self.update(completed=row["episode"] + 1, description=(
            f"ep {row['episode'] + 1} return {row['return']:.1f} "
            f"delay {row['mean_delay_s']:.1f} s lr {row['lr']:.2g}"))


class RobustnessBar(Bar):
    """Runs done over dropout rates, controllers and seeds."""

    def on_run(self, rate: float, controller: str, seed: int) -> None:
        """:func:`experiments.robustness.robustness`'s ``on_run``."""
        self.advance(escape(f"dropout {rate:.0%}: {controller} seed {seed}"))


class StudyBar(Bar):
    """Training runs done over settings and seeds."""

    def __init__(self, scenario: Scenario, runs: int) -> None:
        super().__init__(f"study {scenario.name}", runs)
        self.name = scenario.name

    def on_run(self, run: Any) -> None:
        """:func:`experiments.study.study`'s ``on_run`` with a finished run."""
        self.advance(f"study {self.name}: {run.setting.name} seed {run.seed}")


class ReplayBar(Bar):
    """Simulated seconds of a replay."""

    def __init__(self, controller: str, scenario: Scenario) -> None:
        super().__init__(f"replay {controller} on {scenario.name}", scenario.horizon_s)
        self.begin = scenario.begin

    def on_step(self, t: float) -> None:
        """:func:`experiments.replay.replay`'s ``on_step``."""
        self.update(completed=t - self.begin)


class SweepBar(Bar):
    """Runs of a sweep: done, failed and retried, with the time left; failures printed."""

    def __init__(self, command: str, name: str) -> None:
        super().__init__(f"{command} {name}", None, remaining=True)
        self.counts = {"done": 0, "failed": 0, "retried": 0}

    def on_start(self, total: int, skipped: int) -> None:
        """:func:`experiments.sweep.sweep`'s ``on_start``: the runs, and those already done."""
        if skipped:
            err_console.print(f"[dim]resuming: {skipped} of {total} runs finished before[/dim]")
        self.update(total=total, completed=skipped)

    def on_result(self, unit: Any, row: dict[str, Any], retry: bool) -> None:
        """:func:`experiments.sweep.sweep`'s ``on_result``: one run finished or failed."""
        if row["status"] == "ok":
            self.counts["done"] += 1
            self.advance()
        else:
            self.counts["retried" if retry else "failed"] += 1
            err_console.print(escape(
                f"{unit.network} {unit.label} seed {unit.seed} failed (attempt "
                f"{row['attempt']}{', retrying' if retry else ''}): {row['error']}"),
                style="yellow")
            if not retry:
                self.advance()
        self.update(description=f"{self.description}: {self.counts['done']} done, "
                                f"{self.counts['failed']} failed, "
                                f"{self.counts['retried']} retried")
