"""``tune``: search a classic controller's parameters on tuning demand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from experiments.cli.choices import Backend
from experiments.cli.common import (
    DEFAULT_PROTOCOL,
    JsonOpt,
    ProtocolOpt,
    ScenarioOptions,
    note,
    positive,
    user_errors,
    with_scenario,
)
from experiments.cli.specs import BackendOpt
from experiments.executor import SweepError
from experiments.options import default_folder, demand_option, simulation_options
from simulator.options import SimulationOptions

TUNE_DEMAND = "resample"
"""The demand mode of ``tune`` when ``--demand`` names none: draws of the tuning seeds."""


def tune_options(decision_interval: float | None, demand: str, protocol: str,
                 network: str) -> SimulationOptions:
    """The simulation settings the options give (one line naming the option if bad)."""
    return simulation_options(protocol, network, decision_interval=decision_interval,
                              demand=demand_option(demand, TUNE_DEMAND))


def _trial_note(number: int, value: float | None) -> None:
    note(f"trial {number}: " + ("failed" if value is None else f"{value:.2f} s mean delay"))


@with_scenario
def tune(
    controller: Annotated[str, typer.Argument(
        help="The classic controller: max-pressure, sotl, actuated, webster or coordinated.")],
    where: ScenarioOptions,
    trials: Annotated[int, typer.Option(min=1, help="Trials at most.")] = 20,
    timeout: Annotated[float | None, typer.Option(
        callback=positive, help="Seconds after which no new trials start.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Trials run at a time.")] = 2,
    seeds: Annotated[int, typer.Option(
        "--seeds", "-s", min=1, help="Tuning seeds per trial (10000..10000+K-1).")] = 2,
    seed: Annotated[int, typer.Option(help="The sampler's seed.")] = 0,
    backend: BackendOpt = Backend["local"],
    decision_interval: Annotated[float | None, typer.Option(
        "--decision-interval", callback=positive,
        help="Seconds between decisions (> 0; default: the protocol's, 5).")] = None,
    demand: Annotated[str, typer.Option(
        help="The tuning demand: fixed or resample (drawn from the tuning seeds), with "
             "scale=X or bin_s=S (e.g. resample,scale=1.2).")] = TUNE_DEMAND,
    protocol: ProtocolOpt = DEFAULT_PROTOCOL,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Results folder.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the results in --out.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Tune a classic controller's parameters (Optuna TPE) on tuning seeds; use as tuned:DIR."""
    from experiments.executor import make_executor
    from experiments.layout import claim, fresh
    from experiments.tune import tune as run_tune

    with user_errors(SweepError):
        scenario = where.scenario()
        options = tune_options(decision_interval, demand, protocol.value, scenario.name)
        folder = claim(out or fresh(default_folder("tune", scenario.name, controller)),
                       "tune", overwrite=overwrite)
        result = run_tune(controller, scenario, folder, trials=trials, timeout=timeout,
                          workers=workers, seeds=seeds, seed=seed, options=options,
                          executor=make_executor(backend.value, workers), overwrite=overwrite,
                          on_trial=_trial_note)
    if json_out:
        typer.echo(json.dumps(result.tuned.to_dict()))
        return
    search = result.tuned.search
    typer.echo(f"best of {search['trials']} trials in {result.wall_s:.0f} s: "
               f"{search['value']:.2f} s mean delay (defaults {search['default_value']:.2f} s) "
               f"with {result.tuned.parameters}; use it as tuned:{folder}")
