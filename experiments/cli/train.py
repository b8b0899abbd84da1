"""``train``, ``study`` and ``export``: learned signal policies, from training to the edge."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from experiments.cli.choices import (
    Algo,
    BatchMode,
    Cleaning,
    ExportFormat,
    Observation,
    Optimizer,
    Quantization,
    Reward,
    Schedule,
)
from experiments.cli.common import (
    DEFAULT_PROTOCOL,
    CleaningOpt,
    DemandOpt,
    FaultsOpt,
    JsonOpt,
    ProtocolOpt,
    RunArg,
    ScenarioOptions,
    out_console,
    positive,
    user_errors,
    with_scenario,
)
from experiments.limits import TooLargeError, check_policy
from experiments.options import default_folder
from experiments.progress import StudyBar, TrainBar


@with_scenario
def train(
    where: ScenarioOptions,
    algo: Annotated[Algo, typer.Option(help="Learner.")] = Algo["dqn"],
    episodes: Annotated[
        int | None,
        typer.Option(min=1, help="Training episodes (default 100; --federated: R x K)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Learner seed (held-out evaluation seeds differ).")] = 0,
    optimizer: Annotated[Optimizer, typer.Option(help="Optimiser.")] = Optimizer["adam"],
    lr: Annotated[float, typer.Option(callback=positive, help="Learning rate (> 0).")] = 1e-3,
    momentum: Annotated[float, typer.Option(help="Momentum (momentum, nesterov, rmsprop).")] = 0.9,
    schedule: Annotated[
        Schedule, typer.Option(help="Learning-rate schedule.")
    ] = Schedule["constant"],
    batch_mode: Annotated[
        BatchMode, typer.Option(help="Samples per update: all, --batch-size, or one.")
    ] = BatchMode["mini"],
    batch_size: Annotated[
        int, typer.Option(min=1, help="Batch size for --batch-mode mini.")
    ] = 64,
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay.")] = 0.0,
    l1: Annotated[float, typer.Option(help="L1 penalty coefficient.")] = 0.0,
    grad_clip: Annotated[float, typer.Option(help="Max gradient norm (0: no clipping).")] = 10.0,
    hidden: Annotated[str, typer.Option(help="Hidden layer widths, e.g. 64,64.")] = "64,64",
    independent: Annotated[
        bool, typer.Option("--independent", help="One network per intersection, not shared.")
    ] = False,
    observation: Annotated[
        Observation, typer.Option(help="What the policy sees of each intersection.")
    ] = Observation["queue"],
    reward: Annotated[
        Reward, typer.Option(help="What the policy is rewarded for.")
    ] = Reward["delay"],
    eval_every: Annotated[int, typer.Option(help="Episodes between evaluations.")] = 5,
    eval_seeds: Annotated[
        int, typer.Option(min=1, max=100, help="Seeds of each evaluation (10000 on); their "
                                               "mean delay selects the best checkpoint.")
    ] = 1,
    faults: FaultsOpt = "",
    cleaning: CleaningOpt = Cleaning["none"],
    demand: DemandOpt = "fixed",
    protocol: ProtocolOpt = DEFAULT_PROTOCOL,
    normalize: Annotated[
        bool, typer.Option(help="Normalise observations by running mean and std (kept with "
                                "the policy).")
    ] = False,
    federated: Annotated[
        bool, typer.Option("--federated", help="Federated DQN: each intersection trains its own "
                                               "copy, a server averages them (FedAvg).")
    ] = False,
    local_episodes: Annotated[
        int | None, typer.Option(help="--federated: episodes between rounds, K (default 1).")
    ] = None,
    rounds: Annotated[
        int | None, typer.Option(min=1, help="--federated: rounds R (episodes = R x K).")
    ] = None,
    proximal: Annotated[
        float | None, typer.Option(help="--federated: FedProx mu (default 0: plain FedAvg).")
    ] = None,
    simulations: Annotated[
        int, typer.Option(min=0, help="Episodes simulated at once, the policy deciding for "
                                      "all; 0: one per core, at most 8 (results depend on "
                                      "the number).")
    ] = 1,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run's last checkpoint.")] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Start again in a run dir that already holds a run.")
    ] = False,
) -> None:
    """Train a signal policy by gradient descent into a run dir (checkpoints, curves, plots)."""
    from agents.optim import ConfigError
    from experiments.train import RunExistsError, with_simulations
    from experiments.train import train as run_train
    from experiments.workflows import resumed_spec, training_spec

    with user_errors(ConfigError, RunExistsError, TooLargeError):
        scenario = where.scenario()
        run = out or default_folder("train", scenario.name, algo.value)
        spec = resumed_spec(run) if resume else with_simulations(training_spec(
            algo=algo.value, seed=seed, optimizer=optimizer.value, lr=lr, momentum=momentum,
            schedule=schedule.value, batch_mode=batch_mode.value, batch_size=batch_size,
            weight_decay=weight_decay, l1=l1, grad_clip=grad_clip, hidden=hidden,
            shared=not independent, observation=observation.value, reward=reward.value,
            eval_every=eval_every, faults=faults, cleaning=cleaning.value, normalize=normalize,
            federated=federated, episodes=episodes, local_episodes=local_episodes,
            rounds=rounds, proximal=proximal, demand=demand, protocol=protocol.value,
            network=scenario.name, eval_seeds=eval_seeds), simulations)
        check_policy(spec.hidden, allow_large=bool(where.allow_large))
        with TrainBar(f"train {scenario.name} {spec.algo}", spec.episodes) as bar:
            result = run_train(spec, scenario, run, resume=resume, overwrite=overwrite,
                               on_episode=bar.on_episode)
    if result.stopped:
        typer.echo(f"error: {result.stopped}; the last good checkpoint is kept in {run}", err=True)
        raise typer.Exit(1)
    typer.echo(f"trained {result.episodes} episodes in {result.wall_s:.0f} s; best evaluation "
               f"delay {result.best_eval_delay_s:.2f} s; run: {run}")


@with_scenario
def study(
    where: ScenarioOptions,
    seeds: Annotated[int, typer.Option("--seeds", "-s", min=1, help="Learner seeds 0..N-1.")] = 3,
    episodes: Annotated[int, typer.Option(min=1, help="Training episodes per run.")] = 25,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 2,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Study folder.")] = None,
    json_out: JsonOpt = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a study in --out.")] = False,
) -> None:
    """Train DQN with sgd, momentum, nesterov and adam (constant, cosine) against max-pressure."""
    from agents.optim import ConfigError
    from experiments.layout import claim
    from experiments.study import SETTINGS, summary_table, to_json_text
    from experiments.study import study as run_study

    with user_errors(ConfigError):
        scenario = where.scenario()
        folder = claim(out or default_folder("study", scenario.name), "study",
                       overwrite=overwrite)
        with StudyBar(scenario, len(SETTINGS) * seeds) as bar:
            result = run_study(scenario, folder, seeds=seeds, episodes=episodes, workers=workers,
                               on_run=bar.on_run)
    if json_out:
        typer.echo(to_json_text(result))
    else:
        title = (f"{scenario.name}: DQN, {episodes} episodes, seeds 0-{seeds - 1}; "
                 f"max-pressure {result.reference_delay_s:.1f} s")
        out_console.print(summary_table(result, title))
        out_console.print(f"results: {folder}")
    if result.summary["seeds"].sum() == 0:
        typer.echo(f"error: every run failed; see {folder / 'log.txt'}", err=True)
        raise typer.Exit(1)


def export(
    run: RunArg,
    fmt: Annotated[
        ExportFormat, typer.Option("--format", "-f", help="Model format.")
    ] = ExportFormat["torchscript"],
    quantize: Annotated[
        Quantization | None,
        typer.Option("--quantize", "-q", help="int8: dynamic int8 linear layers."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="File to write (default RUN/edge/policy-fp32.pt, "
                                         "-int8, .onnx)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the file --out names.")] = False,
) -> None:
    """Export a trained policy with its observation normalisation as one file for edge devices."""
    from agents.export import export_policy
    from experiments.layout import claim_files

    precision = None if quantize is None else quantize.value
    with user_errors():
        claim_files([out] if out is not None else [], overwrite=overwrite)
        path = export_policy(run, fmt.value, quantize=precision, out=out)
    typer.echo(f"exported {fmt.value} {precision or 'fp32'}: {path} ({path.stat().st_size} "
               f"bytes); run it with --controllers exported:{path}")
