"""``adapt`` and ``adapt-check``: a deployed policy continued on recent traffic; does it pay."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from experiments.cli.choices import Optimizer, Schedule
from experiments.cli.common import (
    JsonOpt,
    OutOpt,
    RunArg,
    ScenarioOptions,
    note,
    positive,
    user_errors,
    with_scenario,
)
from experiments.cli.driftopts import DEFAULT_HOURS, DriftOpt, HoursOpt

EpisodesOpt = Annotated[int, typer.Option(
    min=1, help="Training episodes of each candidate on recent traffic.")]


def _on_step(step: dict[str, Any]) -> None:
    note(f"step {step['step']}: {step['candidate']} {step['decision']} ({step['reason']}); "
         f"deployed: {step['deployed']}")


@with_scenario
def adapt(
    run: RunArg,
    where: ScenarioOptions,
    drift: DriftOpt = "",
    hours: HoursOpt = DEFAULT_HOURS,
    episodes: EpisodesOpt = 10,
    optimizer: Annotated[Optimizer, typer.Option(help="Optimiser.")] = Optimizer["momentum"],
    lr: Annotated[float, typer.Option(callback=positive, help="Learning rate (> 0).")] = 1e-2,
    momentum: Annotated[float, typer.Option(help="Momentum (momentum, nesterov, rmsprop).")] = 0.9,
    schedule: Annotated[Schedule, typer.Option(
        help="Learning-rate schedule over the candidate's updates.")] = Schedule["cosine"],
    epsilon: Annotated[float, typer.Option(
        min=0, max=1, help="Exploration rate of the candidate.")] = 0.05,
    margin: Annotated[float, typer.Option(
        help="Promote when the mean delay is lower by this share, in [0, 1).")] = 0.02,
    seeds: Annotated[int, typer.Option(
        "--seeds", "-s", min=1, help="Tuning seeds of the shadow evaluation.")] = 5,
    steps: Annotated[int, typer.Option(min=1, help="Adaptation steps.")] = 1,
    out: OutOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the versions in --out.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Train a candidate from a deployed policy on recent traffic; promote it only if better."""
    from agents.errors import ConfigError
    from agents.optim import OptimConfig
    from experiments.adapt import AdaptError, AdaptSettings, adapt_run

    with user_errors(ConfigError, AdaptError):
        optim = OptimConfig(optimizer=optimizer.value, lr=lr, momentum=momentum,
                            schedule=schedule.value)
        settings = AdaptSettings(episodes=episodes, optim=optim, epsilon=epsilon,
                                 margin=margin, seeds=seeds, steps=steps)
        result = adapt_run(run, where, drift, hours, settings, out=out, overwrite=overwrite,
                           on_step=None if json_out else _on_step)
    if json_out:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        typer.echo(f"deployed: {result.deployed} ({len(result.versions)} versions in "
                   f"{Path(result.folder) / 'versions'}); run it as {result.controller}")


@with_scenario
def adapt_check(
    run: RunArg,
    where: ScenarioOptions,
    drift: DriftOpt = "growth=+30%@2h",
    hours: HoursOpt = DEFAULT_HOURS,
    episodes: EpisodesOpt = 10,
    seeds: Annotated[int, typer.Option(
        "--seeds", "-s", min=1, help="Evaluation seeds 0..N-1 of the drifted runs.")] = 5,
    last_hours: Annotated[float, typer.Option(
        callback=positive, help="The last hours whose vehicles count.")] = 2.0,
    workers: Annotated[int, typer.Option(
        min=1, help="Drifted runs side by side (each simulates in a process).")] = 1,
    out: OutOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Start again in --out.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Adapted, unadapted and retrained policy after a drift: late delay and training cost."""
    from agents.errors import ConfigError
    from experiments.adapt import AdaptError, AdaptSettings
    from experiments.adapt_acceptance import acceptance, headline
    from experiments.options import default_folder

    with user_errors(ConfigError, AdaptError):
        folder = out or default_folder("adapt-check", Path(run).name)
        doc = acceptance(run, where, drift, hours, folder, AdaptSettings(episodes=episodes),
                         seeds=seeds, last_hours=last_hours, overwrite=overwrite,
                         workers=workers, on_run=None if json_out else note)
    typer.echo(json.dumps(doc, indent=2) if json_out else headline(doc))
