"""The ``greenphase`` command line: thin commands that parse, call one library function, print."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import networks
from agents import CheckpointError, TrainedPolicyError, UnknownControllerError
from experiments import results
from experiments.compare import compare as run_compare
from experiments.compare import spec_of, validate_controllers
from experiments.compare import write as write_results
from networks import DEFAULT_NETWORK, NetworkError, Scenario
from simulator import ProgramError, SumoError

app = typer.Typer(
    help="greenphase: adaptive traffic signals on real road networks in SUMO, compared honestly.",
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=False,
)
networks_app = typer.Typer(help="The scenario registry.", add_completion=False,
                           pretty_exceptions_enable=False)
app.add_typer(networks_app, name="networks")

# piped output (CI logs, files) gets a width that fits the comparison table
out_console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)

USER_ERRORS = (
    NetworkError, UnknownControllerError, ProgramError, SumoError, results.OutputError,
    CheckpointError, TrainedPolicyError,
)


class BadInput(ValueError):
    """A command-line value that cannot be used."""


@contextlib.contextmanager
def user_errors(*more: type[Exception]) -> Iterator[None]:
    """Turn bad input into one line on stderr and exit status 2, never a traceback."""
    caught: tuple[type[BaseException], ...] = (BadInput, *USER_ERRORS, *more)
    try:
        yield
    except caught as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(2) from None


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
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def scenario_from(
    network: str | None, net: Path | None, routes: list[Path] | None,
    begin: int | None, end: int | None,
) -> Scenario:
    """The scenario the options name: a registered network, or a user's net and routes."""
    if net is not None:
        if network is not None:
            raise BadInput("give either --network or --net/--routes, not both")
        return networks.from_files(net, routes or [], begin, end)
    if routes:
        raise BadInput("--routes needs --net")
    scenario = networks.get(network or DEFAULT_NETWORK)
    if begin is None and end is None:
        return scenario
    b = scenario.begin if begin is None else begin
    e = scenario.end if end is None else end
    return Scenario(scenario.name, scenario.net_file, scenario.route_files, b, e,
                    scenario.description)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=err_console, transient=True,
    )


def _fmt(mean: float, ci: float) -> str:
    return f"{mean:.1f} ± {ci:.1f}"


def comparison_table(summary: Any, title: str) -> Table:
    """The comparison as a table: means ± 95% CI over seeds."""
    table = Table(title=title)
    for col in ("controller", "seeds", "delay s", "travel time s", "waiting s",
                "throughput veh/h", "queue veh", "delay vs fixed"):
        table.add_column(col, justify="left" if col == "controller" else "right")
    for row in summary.to_dict("records"):
        vs = row["delay_vs_fixed_pct"]
        table.add_row(
            row["controller"], str(row["seeds"]),
            _fmt(row["mean_delay_s"], row["ci95_delay_s"]),
            _fmt(row["mean_travel_time_s"], row["ci95_travel_time_s"]),
            _fmt(row["mean_waiting_time_s"], row["ci95_waiting_time_s"]),
            _fmt(row["throughput_veh_h"], row["ci95_throughput_veh_h"]),
            _fmt(row["mean_queue_veh"], row["ci95_queue_veh"]),
            "—" if vs != vs else f"{vs:+.1f}%",
        )
    return table


# ------------------------------------------------------------------ compare
@app.command()
def compare(
    network: NetworkOpt = None,
    net: NetOpt = None,
    routes: RoutesOpt = None,
    begin: BeginOpt = None,
    end: EndOpt = None,
    controllers: Annotated[
        str, typer.Option("--controllers", "-c", help="Comma-separated controller names.")
    ] = "fixed,webster,actuated,max-pressure,sotl,random",
    seeds: Annotated[int, typer.Option("--seeds", "-s", help="Number of seeds (0..N-1).")] = 3,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Results folder (default runs/...).")
    ] = None,
    json_out: JsonOpt = False,
    decision_interval: Annotated[
        float, typer.Option("--decision-interval", help="Seconds between decisions.")
    ] = 5.0,
) -> None:
    """Run controllers on one network over seeds; print the table and write the results."""
    with user_errors():
        if seeds < 1:
            raise BadInput(f"--seeds must be at least 1, got {seeds}")
        if decision_interval <= 0:
            raise BadInput(f"--decision-interval must be > 0, got {decision_interval}")
        scenario = scenario_from(network, net, routes, begin, end)
        names = validate_controllers(controllers.split(","))
        if names[0] not in controllers.split(","):
            err_console.print("[dim]adding fixed timing as the reference[/dim]")
        folder = out or Path("runs") / f"compare-{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        results.ensure_writable(folder)
        seed_list = list(range(seeds))
        steps = -(-scenario.horizon_s // decision_interval)
        started = time.perf_counter()
        with _progress() as bar:
            task = bar.add_task(f"{scenario.name}", total=len(names) * len(seed_list))
            sub = bar.add_task("", total=steps)

            def on_step(controller: str, seed: int, t: float) -> None:
                done = (t - scenario.begin) / decision_interval
                bar.update(sub, completed=done, description=f"  {controller} seed {seed}")
                if t >= scenario.end:
                    bar.advance(task)

            comparison, finished = run_compare(
                scenario, names, seed_list, on_step=on_step, decision_interval=decision_interval
            )
        options = {"decision_interval": decision_interval, "time_to_teleport": -1}
        log = f"greenphase compare: {len(finished)} runs in {time.perf_counter() - started:.1f} s\n"
        write_results(comparison, finished, folder, spec_of(scenario, names, seed_list, options),
                      log=log)
    if json_out:
        typer.echo(json.dumps(comparison.to_json()))
    else:
        sc = scenario
        out_console.print(comparison_table(
            comparison.summary, f"{sc.name}: {sc.begin}-{sc.end} s, seeds 0-{seeds - 1}"))
        out_console.print(f"results: {folder}")


# ------------------------------------------------------------------ training
def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise BadInput(f"{option} takes comma-separated integers, got {text!r}") from None
    if not values:
        raise BadInput(f"{option} is empty")
    return values


@app.command()
def train(
    network: NetworkOpt = None,
    net: NetOpt = None,
    routes: RoutesOpt = None,
    begin: BeginOpt = None,
    end: EndOpt = None,
    algo: Annotated[str, typer.Option(help="dqn or ppo.")] = "dqn",
    episodes: Annotated[int, typer.Option(help="Training episodes.")] = 100,
    seed: Annotated[int, typer.Option(help="Learner seed (held-out evaluation seeds differ).")] = 0,
    optimizer: Annotated[
        str, typer.Option(help="sgd, momentum, nesterov, adam, adamw or rmsprop.")
    ] = "adam",
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 1e-3,
    momentum: Annotated[float, typer.Option(help="Momentum (momentum, nesterov, rmsprop).")] = 0.9,
    schedule: Annotated[
        str, typer.Option(help="constant, step, exponential, cosine or warmup-cosine.")
    ] = "constant",
    batch_mode: Annotated[str, typer.Option(help="full, mini or stochastic.")] = "mini",
    batch_size: Annotated[int, typer.Option(help="Batch size for --batch-mode mini.")] = 64,
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay.")] = 0.0,
    l1: Annotated[float, typer.Option(help="L1 penalty coefficient.")] = 0.0,
    grad_clip: Annotated[float, typer.Option(help="Max gradient norm (0: no clipping).")] = 10.0,
    hidden: Annotated[str, typer.Option(help="Hidden layer widths, e.g. 64,64.")] = "64,64",
    independent: Annotated[
        bool, typer.Option("--independent", help="One network per intersection, not shared.")
    ] = False,
    observation: Annotated[str, typer.Option(help="queue or pressure.")] = "queue",
    reward: Annotated[str, typer.Option(help="delay, waiting-time, queue or pressure.")] = "delay",
    eval_every: Annotated[int, typer.Option(help="Episodes between evaluations.")] = 5,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run's last checkpoint.")] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Start again in a run dir that already holds a run.")
    ] = False,
) -> None:
    """Train a signal policy by gradient descent into a run dir (checkpoints, curves, plots)."""
    from agents import checkpoint
    from agents.optim import ConfigError, OptimConfig
    from experiments.train import RunExistsError, TrainSpec
    from experiments.train import train as run_train

    with user_errors(ConfigError, RunExistsError):
        scenario = scenario_from(network, net, routes, begin, end)
        run = out or Path("runs") / f"train-{scenario.name}-{algo}-{time.strftime('%Y%m%d-%H%M%S')}"
        if resume:
            stored = checkpoint.load(run / "checkpoints" / "last.pt")
            spec = TrainSpec.from_dict(stored["spec"])
        else:
            optim = OptimConfig(
                optimizer=optimizer, lr=lr, momentum=momentum, schedule=schedule,
                batch_mode=batch_mode, batch_size=batch_size, weight_decay=weight_decay,
                l1=l1, grad_clip=grad_clip if grad_clip > 0 else None,
            )
            spec = TrainSpec(
                algo=algo, episodes=episodes, seed=seed, observation=observation,
                reward=reward, shared=not independent, hidden=_int_list(hidden, "--hidden"),
                eval_every=eval_every, optim=optim,
            )
        with _progress() as bar:
            task = bar.add_task(f"train {scenario.name} {spec.algo}", total=spec.episodes)

            def on_episode(row: dict[str, Any]) -> None:
                bar.update(task, completed=row["episode"] + 1, description=(
                    f"ep {row['episode'] + 1} return {row['return']:.1f} "
                    f"delay {row['mean_delay_s']:.1f} s lr {row['lr']:.2g}"))

            result = run_train(spec, scenario, run, resume=resume, overwrite=overwrite,
                               on_episode=on_episode)
    if result.stopped:
        typer.echo(f"error: {result.stopped}; the last good checkpoint is kept in {run}", err=True)
        raise typer.Exit(1)
    typer.echo(f"trained {result.episodes} episodes in {result.wall_s:.0f} s; best evaluation "
               f"delay {result.best_eval_delay_s:.2f} s; run: {run}")


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="A training run directory (or a checkpoint).")],
    network: NetworkOpt = None,
    net: NetOpt = None,
    routes: RoutesOpt = None,
    begin: BeginOpt = None,
    end: EndOpt = None,
    seeds: Annotated[int, typer.Option("--seeds", "-s", help="Held-out seeds 0..N-1.")] = 3,
    controllers: Annotated[
        str, typer.Option("--controllers", "-c", help="Others to compare with, comma-separated.")
    ] = "",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Results folder.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Evaluate a trained run over held-out seeds against fixed timing (and others)."""
    from agents.trained import load_policy

    with user_errors():
        _, policy = load_policy(run)
        if network is None and net is None:
            network = policy.get("network")
        others = [c for c in controllers.split(",") if c.strip()]
        compare(network=network, net=net, routes=routes, begin=begin, end=end,
                controllers=",".join(["fixed", f"trained:{run}", *others]), seeds=seeds,
                out=out, json_out=json_out, decision_interval=policy.get("decision_interval", 5.0))


# ------------------------------------------------------------------ study
@app.command()
def study(
    network: NetworkOpt = None,
    net: NetOpt = None,
    routes: RoutesOpt = None,
    begin: BeginOpt = None,
    end: EndOpt = None,
    seeds: Annotated[int, typer.Option("--seeds", "-s", help="Learner seeds 0..N-1.")] = 3,
    episodes: Annotated[int, typer.Option(help="Training episodes per run.")] = 25,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Study folder.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Train DQN with sgd, momentum, nesterov and adam (constant, cosine) against max-pressure."""
    from agents.optim import ConfigError
    from experiments.study import SETTINGS, RunOutcome, summary_table, to_json_text
    from experiments.study import study as run_study

    with user_errors(ConfigError):
        for option, value in (("--seeds", seeds), ("--episodes", episodes),
                              ("--workers", workers)):
            if value < 1:
                raise BadInput(f"{option} must be at least 1, got {value}")
        scenario = scenario_from(network, net, routes, begin, end)
        folder = out or Path("runs") / f"study-{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        with _progress() as bar:
            task = bar.add_task(f"study {scenario.name}", total=len(SETTINGS) * seeds)

            def on_run(run: RunOutcome) -> None:
                bar.update(task, advance=1,
                           description=f"study {scenario.name}: {run.setting.name} seed {run.seed}")

            result = run_study(scenario, folder, seeds=seeds, episodes=episodes, workers=workers,
                               on_run=on_run)
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


# ------------------------------------------------------------------ networks
@networks_app.command("list")
def networks_list(json_out: JsonOpt = False) -> None:
    """The registered networks: signals, controlled lanes, vehicles, horizon."""
    with user_errors():
        rows = [networks.describe(networks.get(name)) for name in networks.names()]
    if json_out:
        typer.echo(json.dumps(rows))
        return
    table = Table(title="networks")
    for col in ("name", "signals", "controlled lanes", "vehicles", "horizon s", "description"):
        table.add_column(col, justify="left" if col in ("name", "description") else "right")
    for r in rows:
        table.add_row(str(r["name"]), str(r["signals"]), str(r["controlled_lanes"]),
                      str(r["vehicles"]), f"{r['begin_s']}-{r['end_s']}", str(r["description"]))
    out_console.print(table)


@networks_app.command("generate")
def networks_generate(
    rows: Annotated[int, typer.Option("--rows", help="Intersections per column.")] = 3,
    cols: Annotated[int, typer.Option("--cols", help="Intersections per row.")] = 3,
) -> None:
    """Generate (and cache) a signalised grid with demand; print its files."""
    with user_errors():
        scenario = networks.get(f"grid-{rows}x{cols}")
    typer.echo(f"{scenario.name}: {scenario.net_file} {' '.join(map(str, scenario.route_files))}")


# ------------------------------------------------------------------ bench
@app.command()
def bench(
    network: NetworkOpt = None,
    net: NetOpt = None,
    routes: RoutesOpt = None,
    begin: BeginOpt = None,
    end: EndOpt = None,
    repeats: Annotated[int, typer.Option("--repeats", help="Episodes per row (median).")] = 3,
    json_out: JsonOpt = False,
) -> None:
    """Time one episode: SUMO alone, sumo-rl's env, and greenphase's env, side by side."""
    from experiments.bench import bench as run_bench
    from experiments.bench import format_table

    with user_errors():
        if repeats < 1:
            raise BadInput(f"--repeats must be at least 1, got {repeats}")
        scenario = scenario_from(network or ("cologne8" if net is None else None),
                                 net, routes, begin, end)
        result = run_bench(scenario, repeats=repeats,
                           progress=lambda msg: err_console.print(f"[dim]{msg}[/dim]"))
    if json_out:
        typer.echo(json.dumps(result))
    else:
        out_console.print(format_table(result))


# ------------------------------------------------------------------ replay
@app.command()
def replay(
    run: Annotated[
        Path | None,
        typer.Argument(help="A training run dir or a compare results folder; optional with "
                            "--network/--net and --controller."),
    ] = None,
    network: NetworkOpt = None,
    net: NetOpt = None,
    routes: RoutesOpt = None,
    begin: BeginOpt = None,
    end: EndOpt = None,
    controller: Annotated[
        str | None,
        typer.Option("--controller", "-c",
                     help="Controller to watch: one of a compare folder's, or any by name."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", "-s", help="SUMO seed.")] = 0,
    delay: Annotated[
        int, typer.Option("--delay", help="Real milliseconds per simulated second in the GUI.")
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
) -> None:
    """Watch a run in sumo-gui: same network, demand, seed and controller as measured."""
    from experiments.display import DisplayError
    from experiments.replay import GuiClosedError, ReplayError, plan
    from experiments.replay import replay as run_replay

    with user_errors(ReplayError, DisplayError):
        scenario = (scenario_from(network, net, routes, begin, end)
                    if network is not None or net is not None or routes else None)
        target = plan(run, scenario=scenario, controller=controller, seed=seed,
                      begin=begin, end=end)
        sc = target.scenario
        try:
            with _progress() as bar:
                task = bar.add_task(f"replay {target.controller} on {sc.name}",
                                    total=sc.horizon_s)
                result = run_replay(
                    target, delay_ms=delay, screenshot=screenshot, at=at or (),
                    on_step=lambda t: bar.update(task, completed=t - sc.begin),
                )
        except GuiClosedError as err:
            typer.echo(f"{'error' if screenshot else 'stopped'}: {err}", err=True)
            raise typer.Exit(1 if screenshot else 0) from None
    for path in result.screenshots:
        typer.echo(f"screenshot: {path}")
    if screenshot is None:
        k = result.kpis
        typer.echo(f"{target.controller} on {sc.name}, seed {target.seed}, {sc.begin}-{sc.end} s: "
                   f"mean delay {k['mean_delay_s']:.2f} s, travel time "
                   f"{k['mean_travel_time_s']:.2f} s, {k['vehicles']:.0f} vehicles")
        if target.measured is not None:
            typer.echo(f"measured in {target.run}: mean delay "
                       f"{target.measured['mean_delay_s']:.2f} s")


@networks_app.command("show")
def networks_show(
    png: Annotated[Path, typer.Option("--png", help="The PNG file to write.")],
    name: Annotated[
        str | None, typer.Argument(help="Registered network or grid-RxC (default cologne1).")
    ] = None,
    net: NetOpt = None,
) -> None:
    """Draw a network as a PNG: its roads, and its traffic lights marked and labelled."""
    from networks.picture import draw

    with user_errors():
        if net is not None:
            if name is not None:
                raise BadInput("give either a network NAME or --net, not both")
            title = None
        else:
            scenario = networks.get(name or DEFAULT_NETWORK)
            net = scenario.net_file
            title = f"{scenario.name}: {scenario.description}"
        draw(net, png, title=title)
    typer.echo(f"picture: {png}")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
