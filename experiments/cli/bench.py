"""``bench`` and ``bench-sweep``: how fast episodes and sweeps run, and how small a policy is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from experiments.cli.common import (
    JsonOpt,
    NetworkOpt,
    ScenarioOptions,
    note,
    out_console,
    user_errors,
    with_scenario,
)
from experiments.options import int_list


@with_scenario
def bench(
    where: ScenarioOptions,
    repeats: Annotated[
        int, typer.Option("--repeats", min=1, help="Episodes per row (median).")
    ] = 3,
    json_out: JsonOpt = False,
    edge: Annotated[
        Path | None,
        typer.Option("--edge", help="A trained run: size, one-thread decision latency and delay "
                                    "of its policy exported fp32 and int8."),
    ] = None,
    seeds: Annotated[
        int, typer.Option("--seeds", "-s", min=1,
                          help="--edge: held-out seeds 0..N-1 for the delay.")
    ] = 3,
    train: Annotated[
        bool, typer.Option("--train", help="Decision steps per second while a DQN learns: "
                                           "SB3's and greenphase's, side by side.")
    ] = False,
) -> None:
    """Time one episode: SUMO alone, sumo-rl's env, and greenphase's env, side by side."""
    from experiments.bench import bench as run_bench
    from experiments.bench import format_table
    from experiments.edge import bench_edge, format_edge_table

    if train:
        return bench_learning(where, repeats, json_out)
    with user_errors():
        if edge is not None:
            result = bench_edge(edge, scenario=where.scenario_if_named(), seeds=seeds,
                                progress=note)
        else:
            result = run_bench(where.scenario(default="cologne8"), repeats=repeats,
                               progress=note)
    if json_out:
        typer.echo(json.dumps(result))
    else:
        out_console.print(format_edge_table(result) if edge is not None
                          else format_table(result))


def bench_sweep(
    network: NetworkOpt = None,
    runs: Annotated[int | None, typer.Option("--runs", min=1, help="Runs (default 8; 100 with "
                                                                   "--memory).")] = None,
    workers: Annotated[str, typer.Option("--workers", help="Worker counts to time, "
                                                           "comma-separated.")] = "1,2",
    memory: Annotated[bool, typer.Option("--memory", help="Measure peak memory over a long "
                                                          "sweep instead.")] = False,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Timings per worker count, "
                                                                  "interleaved (median).")] = 1,
    horizon: Annotated[
        int | None,
        typer.Option("--horizon", min=1, help="Simulated seconds per run (default: the "
                                              "network's)."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Scratch folder.")] = Path(
        "runs/bench-sweep"),
    json_out: JsonOpt = False,
) -> None:
    """Sweep scaling (the same runs on 1 and 2 workers) or peak memory over a 100-run sweep."""
    from experiments.bench import bench_sweep as run_bench_sweep
    from experiments.bench import format_sweep_table
    from experiments.sweep import SweepError

    with user_errors(SweepError):
        counts = int_list(workers, "--workers") if workers != "1,2" else None
        result = run_bench_sweep(out, network=network, runs=runs, workers=counts, memory=memory,
                                 repeats=repeats, horizon_s=horizon, progress=note)
    if json_out:
        typer.echo(json.dumps(result))
    else:
        out_console.print(format_sweep_table(result))


def bench_learning(where: ScenarioOptions, repeats: int, json_out: bool) -> None:
    """``bench --train``: DQN learning speed on the network (default cologne1)."""
    from experiments.bench_train import bench_train, format_train_table

    with user_errors():
        result = bench_train(where.scenario(default="cologne1"), repeats=repeats, progress=note)
    if json_out:
        typer.echo(json.dumps(result))
    else:
        out_console.print(format_train_table(result))
