"""``replay``: watch a measured run again in sumo-gui, or save screenshots of it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from experiments.cli.common import ScenarioOptions, user_errors, with_scenario
from experiments.progress import ReplayBar

if TYPE_CHECKING:
    from experiments.replay import Replay, ReplayResult


@with_scenario
def replay(
    run: Annotated[
        Path | None,
        typer.Argument(help="A training run dir or a compare results folder; optional with "
                            "--network/--net and --controller."),
    ] = None,
    *,
    where: ScenarioOptions,
    controller: Annotated[
        str | None,
        typer.Option("--controller", "-c",
                     help="Controller to watch: one of a compare folder's, or any by name."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", "-s", help="SUMO seed.")] = 0,
    delay: Annotated[
        int, typer.Option("--delay", min=0,
                          help="Real milliseconds per simulated second in the GUI.")
    ] = 50,
    screenshot: Annotated[
        Path | None,
        typer.Option("--screenshot", help="Save the view as PNG, headless, then exit "
                                          "(several --at: FILE-<t>s.png)."),
    ] = None,
    at: Annotated[
        list[float] | None,
        typer.Option("--at", help="Simulated seconds from the scenario's begin for "
                                  "--screenshot (repeatable; default: the end)."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace screenshots that exist.")] = False,
) -> None:
    """Watch a run in sumo-gui: same network, demand, seed and controller as measured."""
    from experiments.display import DisplayError
    from experiments.layout import claim_files
    from experiments.replay import GuiClosedError, ReplayError, plan, screenshot_paths
    from experiments.replay import replay as run_replay

    with user_errors(ReplayError, DisplayError):
        if screenshot is not None:
            claim_files(screenshot_paths(screenshot, at) if at else [screenshot],
                        overwrite=overwrite)
        target = plan(run, scenario=where.scenario_if_named(),
                      controller=controller, seed=seed, begin=where.begin, end=where.end)
        try:
            with ReplayBar(target.controller, target.scenario) as bar:
                result = run_replay(target, delay_ms=delay, screenshot=screenshot, at=at or (),
                                    on_step=bar.on_step)
        except GuiClosedError as err:
            typer.echo(f"{'error' if screenshot else 'stopped'}: {err}", err=True)
            raise typer.Exit(1 if screenshot else 0) from None
    for path in result.screenshots:
        typer.echo(f"screenshot: {path}")
    if screenshot is None:
        for line in summary_lines(target, result):
            typer.echo(line)


def summary_lines(target: Replay, result: ReplayResult) -> list[str]:
    """What a watched replay measured, and what the run it replays measured."""
    sc, k = target.scenario, result.kpis
    lines = [f"{target.controller} on {sc.name}, seed {target.seed}, {sc.begin}-{sc.end} s: "
             f"mean delay {k['mean_delay_s']:.2f} s, travel time "
             f"{k['mean_travel_time_s']:.2f} s, {k['vehicles']:.0f} vehicles"]
    if target.measured is not None:
        lines.append(f"measured in {target.run}: mean delay "
                     f"{target.measured['mean_delay_s']:.2f} s")
    return lines
