"""``benchmark``: every network of a suite, classic, tuned and learned, into a leaderboard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from experiments.benchmark import EVALUATION_SEEDS
from experiments.cli.choices import Backend
from experiments.cli.common import DEFAULT_PROTOCOL, JsonOpt, ProtocolOpt, note, user_errors
from experiments.cli.specs import BackendOpt
from experiments.executor import SweepError

if TYPE_CHECKING:
    from experiments.benchmark import Stage


def _stage_note(stage: Stage, event: str) -> None:
    words = {"start": "running", "done": "finished", "skip": "already done:"}[event]
    note(f"{stage.network}: {words} {stage.name}")


def benchmark(
    suite: Annotated[str, typer.Option(help="The suite of networks: resco (its eight).")] = "resco",
    networks: Annotated[str | None, typer.Option(
        help="Only these networks, comma-separated (default: the suite's).")] = None,
    protocol: ProtocolOpt = DEFAULT_PROTOCOL,
    budget_min: Annotated[float, typer.Option(
        "--budget-min", min=0.1, help="Wall minutes of training per learner and network.")] = 30.0,
    seeds: Annotated[int, typer.Option(
        "--seeds", "-s", min=1, help="Held-out evaluation seeds 0..N-1.")] = EVALUATION_SEEDS,
    trials: Annotated[int, typer.Option(min=1, help="Trials of each baseline's search.")] = 12,
    learners: Annotated[str, typer.Option(
        help="Learners to train, comma-separated (dqn, ppo); the one with the lower delay on "
             "its tuning seed is reported.")] = "dqn",
    smoke: Annotated[bool, typer.Option(
        help="A tiny version: two networks, 600 s horizons, a few episodes (for CI).")] = False,
    backend: BackendOpt = Backend["local"],
    address: Annotated[str | None, typer.Option(help="Ray cluster address.")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Runs at a time.")] = None,
    simulations: Annotated[int, typer.Option(
        min=0, help="Training episodes simulated at once (0: one per core, at most 8).")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue the benchmark in --out.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace the benchmark in --out.")] = False,
    out: Annotated[Path, typer.Option("--out", "-o", help="Results folder.")] = Path(
        "runs/benchmark"),
    json_out: JsonOpt = False,
) -> None:
    """Tune the baselines, train the learners and evaluate them all on held-out demand."""
    from experiments.benchmark import BenchmarkError, plan_benchmark, run_benchmark
    from experiments.options import controller_names

    with user_errors(SweepError, BenchmarkError):
        plan = plan_benchmark(
            suite=suite, folder=out,
            networks=() if networks is None else controller_names(networks, "--networks"),
            protocol=protocol.value, budget_min=budget_min, seeds=seeds, trials=trials,
            learners=controller_names(learners, "--learners"), smoke=smoke, workers=workers,
            backend=backend.value, address=address, resume=resume, overwrite=overwrite,
            simulations=simulations)
        doc = run_benchmark(plan, on_stage=_stage_note)
    if json_out:
        typer.echo(json.dumps(doc))
        return
    typer.echo((out / "leaderboard.md").read_text())
    typer.echo(f"leaderboard: {out / 'leaderboard.md'}, {out / 'leaderboard.csv'}, "
               f"{doc['plot']}")
