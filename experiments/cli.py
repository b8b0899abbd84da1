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
from simulator.cleaning import CLEANINGS, CleaningError
from simulator.faults import FaultConfig, FaultConfigError

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
FaultsOpt = Annotated[str, typer.Option(
    "--faults", help="Sensor faults the controllers see, e.g. 'dropout=0.2,noise=0.1' (kinds: "
                     "noise, dropout, stuck, stuck_steps, latency, failure, seed).")]
CleaningOpt = Annotated[str, typer.Option(
    "--cleaning", help="Fill in missing readings before the controllers: none, last or "
                       "zero-flag.")]


def sensor_options(faults: str, cleaning: str) -> tuple[FaultConfig, str]:
    """The parsed ``--faults`` and a checked ``--cleaning``; bad values are :class:`BadInput`."""
    try:
        config = FaultConfig.parse(faults)
    except FaultConfigError as err:
        raise BadInput(f"--faults: {err}") from None
    if cleaning not in CLEANINGS:
        raise BadInput(f"--cleaning: unknown {cleaning!r}; choose from {', '.join(CLEANINGS)}")
    return config, cleaning


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
    faults: FaultsOpt = "",
    cleaning: CleaningOpt = "none",
) -> None:
    """Run controllers on one network over seeds; print the table and write the results."""
    from simulator.cleaning import sensor_model

    with user_errors(FaultConfigError, CleaningError):
        fault_config, cleaning = sensor_options(faults, cleaning)
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
                scenario, names, seed_list, on_step=on_step, decision_interval=decision_interval,
                sensor_model=sensor_model(fault_config, cleaning),
            )
        options: dict[str, Any] = {"decision_interval": decision_interval, "time_to_teleport": -1}
        if fault_config.active or cleaning != "none":
            options |= {"faults": str(fault_config), "cleaning": cleaning}
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


def _federated(federated: bool, episodes: int | None, local_episodes: int | None,
               rounds: int | None, proximal: float | None) -> dict[str, Any]:
    """The ``episodes`` and ``federated`` settings of ``train`` from its options."""
    from agents.federated import FederatedConfig

    if not federated:
        if local_episodes is not None or rounds is not None or proximal is not None:
            raise BadInput("--local-episodes, --rounds and --proximal need --federated")
        return {"episodes": 100 if episodes is None else episodes, "federated": None}
    config = FederatedConfig(local_episodes=1 if local_episodes is None else local_episodes,
                             proximal_mu=0.0 if proximal is None else proximal)
    if rounds is None:
        return {"episodes": 100 if episodes is None else episodes, "federated": config}
    if rounds < 1:
        raise BadInput(f"--rounds must be at least 1, got {rounds}")
    if episodes is not None and episodes != rounds * config.local_episodes:
        raise BadInput(f"--episodes {episodes} is not --rounds {rounds} x --local-episodes "
                       f"{config.local_episodes}: give one or the other")
    return {"episodes": rounds * config.local_episodes, "federated": config}


@app.command()
def train(
    network: NetworkOpt = None,
    net: NetOpt = None,
    routes: RoutesOpt = None,
    begin: BeginOpt = None,
    end: EndOpt = None,
    algo: Annotated[str, typer.Option(help="dqn or ppo.")] = "dqn",
    episodes: Annotated[
        int | None, typer.Option(help="Training episodes (default 100; --federated: R x K).")
    ] = None,
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
    faults: FaultsOpt = "",
    cleaning: CleaningOpt = "none",
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
        int | None, typer.Option(help="--federated: rounds R (episodes = R x K).")
    ] = None,
    proximal: Annotated[
        float | None, typer.Option(help="--federated: FedProx mu (default 0: plain FedAvg).")
    ] = None,
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
            fault_config, cleaning = sensor_options(faults, cleaning)
            optim = OptimConfig(
                optimizer=optimizer, lr=lr, momentum=momentum, schedule=schedule,
                batch_mode=batch_mode, batch_size=batch_size, weight_decay=weight_decay,
                l1=l1, grad_clip=grad_clip if grad_clip > 0 else None,
            )
            spec = TrainSpec(
                algo=algo, seed=seed, observation=observation,
                reward=reward, shared=not independent, hidden=_int_list(hidden, "--hidden"),
                eval_every=eval_every, optim=optim,
                faults=str(fault_config), cleaning=cleaning, normalize=normalize,
                **_federated(federated, episodes, local_episodes, rounds, proximal),
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
    faults: FaultsOpt = "",
    cleaning: CleaningOpt = "none",
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
                out=out, json_out=json_out, decision_interval=policy.get("decision_interval", 5.0),
                faults=faults, cleaning=cleaning)


# ------------------------------------------------------------------ robustness
def _rates(text: str) -> list[float]:
    try:
        rates = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BadInput(f"--rates takes comma-separated numbers, got {text!r}") from None
    if not rates:
        raise BadInput("--rates is empty")
    for rate in rates:
        if not 0 <= rate < 1:
            raise BadInput(f"--rates: dropout must be in [0, 1), got {rate:g}")
    return rates


@app.command()
def robustness(
    run: Annotated[Path, typer.Option("--run", help="A training run directory (or checkpoint).")],
    network: NetworkOpt = None,
    net: NetOpt = None,
    routes: RoutesOpt = None,
    begin: BeginOpt = None,
    end: EndOpt = None,
    rates: Annotated[
        str, typer.Option("--rates", help="Dropout rates, comma-separated, each in [0, 1).")
    ] = "0,0.1,0.2,0.3,0.4,0.5",
    seeds: Annotated[int, typer.Option("--seeds", "-s", help="Held-out seeds 0..N-1.")] = 3,
    faults: Annotated[str, typer.Option(
        "--faults", help="Other faults on at every rate, e.g. 'noise=0.1' (not dropout).")] = "",
    cleaning: CleaningOpt = "none",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Results folder.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Mean delay of fixed timing, max-pressure and a trained policy as sensor dropout rises."""
    from agents.trained import load_policy
    from experiments.robustness import robustness as run_robustness
    from experiments.robustness import table
    from experiments.robustness import write as write_robustness

    with user_errors(FaultConfigError, CleaningError):
        base, cleaning = sensor_options(faults, cleaning)
        if base.dropout:
            raise BadInput("--faults: leave dropout out, --rates sweeps it")
        rate_list = _rates(rates)
        if seeds < 1:
            raise BadInput(f"--seeds must be at least 1, got {seeds}")
        _, policy = load_policy(run)
        if network is None and net is None:
            network = policy.get("network")
        scenario = scenario_from(network, net, routes, begin, end)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder = out or Path("runs") / f"robustness-{scenario.name}-{stamp}"
        results.ensure_writable(folder)
        started = time.perf_counter()
        with _progress() as bar:
            task = bar.add_task(f"robustness {scenario.name}", total=len(rate_list) * 3 * seeds)

            def on_run(rate: float, controller: str, seed: int) -> None:
                bar.update(task, advance=1, description=f"dropout {rate:.0%}: {controller} "
                                                        f"seed {seed}")

            result = run_robustness(
                scenario, f"trained:{run}", rate_list, list(range(seeds)), base=base,
                cleaning=cleaning, on_run=on_run,
                decision_interval=policy.get("decision_interval", 5.0),
            )
        log = (f"greenphase robustness: {len(result.runs)} runs in "
               f"{time.perf_counter() - started:.1f} s\n")
        write_robustness(result, folder, log=log)
    if json_out:
        typer.echo(json.dumps(result.to_json()))
    else:
        sc = scenario
        extra = ", ".join(p for p in (str(base), f"cleaning {cleaning}") if p)
        out_console.print(table(result, f"{sc.name}: mean delay by dropout, seeds 0-{seeds - 1}; "
                                        f"{extra}"))
        out_console.print(f"results: {folder}")


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
    edge: Annotated[
        Path | None,
        typer.Option("--edge", help="A trained run: size, one-thread decision latency and delay "
                                    "of its policy exported fp32 and int8."),
    ] = None,
    seeds: Annotated[
        int, typer.Option("--seeds", "-s", help="--edge: held-out seeds 0..N-1 for the delay.")
    ] = 3,
) -> None:
    """Time one episode: SUMO alone, sumo-rl's env, and greenphase's env, side by side."""
    from experiments.bench import bench as run_bench
    from experiments.bench import format_table

    if edge is not None:
        _bench_edge(edge, network, net, routes, begin, end, seeds, json_out)
        return
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


def _bench_edge(run: Path, network: str | None, net: Path | None, routes: list[Path] | None,
                begin: int | None, end: int | None, seeds: int, json_out: bool) -> None:
    """``bench --edge RUN``: the exported policy's size, latency and delay, fp32 and int8."""
    from experiments.edge import bench_edge, format_edge_table

    with user_errors():
        if seeds < 1:
            raise BadInput(f"--seeds must be at least 1, got {seeds}")
        scenario = (scenario_from(network, net, routes, begin, end)
                    if network is not None or net is not None or routes else None)
        result = bench_edge(run, scenario=scenario, seeds=seeds,
                            progress=lambda msg: err_console.print(f"[dim]{msg}[/dim]"))
    if json_out:
        typer.echo(json.dumps(result))
    else:
        out_console.print(format_edge_table(result))


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


# ------------------------------------------------------------------ specs, sweeps, reports
SpecArg = Annotated[
    Path, typer.Argument(help="A spec file (TOML); examples in experiments/specs/.")]
WorkersOpt = Annotated[
    int | None, typer.Option("--workers", "-w", help="Runs at a time (default: the CPU cores; "
                                                     "Ray: the cluster's CPUs).")]
BackendOpt = Annotated[str, typer.Option("--backend", help="local (process pool) or ray.")]
AddressOpt = Annotated[
    str | None, typer.Option("--address", help="A Ray cluster's address, e.g. 10.0.0.1:6379 "
                                               "(default: start a local Ray).")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Skip the runs the store holds.")]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Start again in a folder that holds a sweep.")]
RetriesOpt = Annotated[int, typer.Option("--retries", help="Retries of a failed run.")]
FailUnderOpt = Annotated[
    list[str] | None,
    typer.Option("--fail-under", help="A gate, [CONTROLLER:]METRIC OP NUMBER, e.g. "
                                      "'max-pressure:delay_vs_fixed_pct<=-20' (repeatable): "
                                      "exit 1 when a controller misses it."),
]


def _run_spec(
    command: str, spec: Path, *, workers: int | None, backend: str, address: str | None,
    resume: bool, overwrite: bool, retries: int, out: Path | None, json_out: bool,
    fail_under: list[str] | None,
) -> None:
    """``run`` and ``sweep``: expand the spec, run what is missing, report, apply the gates."""
    from rich.markup import escape
    from rich.progress import TimeRemainingColumn

    from experiments import gates as gate_checks
    from experiments.report import ReportError, headline, load_runs, summary_markdown, write_report
    from experiments.spec import SpecError, load
    from experiments.sweep import SweepError
    from experiments.sweep import sweep as run_sweep
    from networks import NetworkError

    with user_errors(SpecError, SweepError, gate_checks.GateError, ReportError, NetworkError):
        gates = [gate_checks.parse(text) for text in fail_under or []]
        plan = load(spec)
        if command == "run" and not plan.single:
            raise BadInput(f"{spec} has a [sweep] table: use `greenphase sweep {spec}`")
        gate_checks.check_controllers(gates, sorted({u.controller for u in plan.units}),
                                      sorted({u.label for u in plan.units}))
        folder = out or Path("runs") / plan.name
        counts = {"done": 0, "failed": 0, "retried": 0}
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                      console=err_console, transient=True) as bar:
            task = bar.add_task(f"{command} {plan.name}", total=None)

            def on_start(total: int, skipped: int) -> None:
                if skipped:
                    err_console.print(f"[dim]resuming: {skipped} of {total} runs finished "
                                      "before[/dim]")
                bar.update(task, total=total, completed=skipped)

            def on_result(unit: Any, row: dict[str, Any], retry: bool) -> None:
                if row["status"] == "ok":
                    counts["done"] += 1
                    bar.advance(task)
                else:
                    counts["retried" if retry else "failed"] += 1
                    err_console.print(escape(
                        f"{unit.network} {unit.label} seed {unit.seed} failed (attempt "
                        f"{row['attempt']}{', retrying' if retry else ''}): {row['error']}"),
                        style="yellow")
                    if not retry:
                        bar.advance(task)
                bar.update(task, description=f"{command} {plan.name}: {counts['done']} done, "
                                             f"{counts['failed']} failed, "
                                             f"{counts['retried']} retried")

            result = run_sweep(plan, folder, workers=workers, backend=backend, address=address,
                               resume=resume, overwrite=overwrite, retries=retries, report=False,
                               on_start=on_start, on_result=on_result)
        verdicts = gate_checks.check(gates, result.summary)
        gate_text = gate_checks.markdown(verdicts)
        report_path = write_report(folder, extra=gate_text)
        gate_checks.append_step_summary(
            f"### greenphase {command} {plan.name}\n\n{headline(load_runs(folder), None)}\n\n"
            f"{summary_markdown(result.summary)}\n{gate_text}")
    if json_out:
        doc = result.to_json()
        doc["gates"] = [{"gate": v.gate.text, "network": v.network, "cell": v.cell,
                         "controller": v.controller, "value": None if v.value != v.value
                         else v.value, "passed": v.passed} for v in verdicts]
        typer.echo(json.dumps(doc))
    else:
        from experiments.report import summary_table

        out_console.print(summary_table(
            result.summary, f"{plan.name}: {result.finished} of {result.total} runs, "
                            f"{result.wall_s:.0f} s on {result.workers} {backend} worker(s)"))
        out_console.print(f"results: {folder}  report: {report_path}")
    failed_gates = [v for v in verdicts if not v.passed]
    for verdict in failed_gates:
        typer.echo(verdict.line(), err=True)
    if result.failures:
        typer.echo(f"error: {len(result.failures)} run(s) failed after {retries + 1} "
                   f"attempt(s); see {report_path}", err=True)
    if failed_gates or result.failures:
        raise typer.Exit(1)


@app.command()
def run(
    spec: SpecArg,
    workers: WorkersOpt = None,
    backend: BackendOpt = "local",
    address: AddressOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    retries: RetriesOpt = 2,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Results folder "
                                                                 "(default runs/<name>).")] = None,
    json_out: JsonOpt = False,
    fail_under: FailUnderOpt = None,
) -> None:
    """Run one experiment from a spec file: each controller over each seed, stored, reported."""
    _run_spec("run", spec, workers=workers, backend=backend, address=address, resume=resume,
              overwrite=overwrite, retries=retries, out=out, json_out=json_out,
              fail_under=fail_under)


@app.command()
def sweep(
    spec: SpecArg,
    workers: WorkersOpt = None,
    backend: BackendOpt = "local",
    address: AddressOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    retries: RetriesOpt = 2,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Results folder "
                                                                 "(default runs/<name>).")] = None,
    json_out: JsonOpt = False,
    fail_under: FailUnderOpt = None,
) -> None:
    """Run a sweep: every point of the spec's axes, each controller and seed; resumable."""
    _run_spec("sweep", spec, workers=workers, backend=backend, address=address, resume=resume,
              overwrite=overwrite, retries=retries, out=out, json_out=json_out,
              fail_under=fail_under)


@app.command()
def report(
    folder: Annotated[Path, typer.Argument(help="A results folder: a sweep's or a comparison's.")],
) -> None:
    """Write report.md and plots/*.png for a results folder and print its summary."""
    from experiments.report import ReportError, load_runs, summarize, summary_table, write_report

    with user_errors(ReportError):
        path = write_report(folder)
        summary = summarize(load_runs(folder))
    out_console.print(summary_table(summary, f"{folder}"))
    out_console.print(f"report: {path}")


@app.command("bench-sweep")
def bench_sweep(
    network: NetworkOpt = None,
    runs: Annotated[int | None, typer.Option("--runs", help="Runs (default 8; 100 with "
                                                            "--memory).")] = None,
    workers: Annotated[str, typer.Option("--workers", help="Worker counts to time, "
                                                           "comma-separated.")] = "1,2",
    memory: Annotated[bool, typer.Option("--memory", help="Measure peak memory over a long "
                                                          "sweep instead.")] = False,
    repeats: Annotated[int, typer.Option("--repeats", help="Timings per worker count, "
                                                           "interleaved (median).")] = 1,
    horizon: Annotated[
        int | None,
        typer.Option("--horizon", help="Simulated seconds per run (default: the network's)."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Scratch folder.")] = Path(
        "runs/bench-sweep"),
    json_out: JsonOpt = False,
) -> None:
    """Sweep scaling (the same runs on 1 and 2 workers) or peak memory over a 100-run sweep."""
    from experiments.sweep import SweepError, scaling
    from experiments.sweep import memory as run_memory

    with user_errors(SweepError):
        say = lambda msg: err_console.print(f"[dim]{msg}[/dim]")  # noqa: E731
        if memory:
            counts = _int_list(workers, "--workers") if workers != "1,2" else (None,)
            result = run_memory(out, network=network or "cologne1", runs=runs or 100,
                                workers=counts[0], horizon_s=horizon, progress=say)
        else:
            result = scaling(out, network=network or "grid4x4", runs=runs or 8,
                             workers=_int_list(workers, "--workers"), repeats=repeats,
                             horizon_s=horizon, progress=say)
    if json_out:
        typer.echo(json.dumps(result))
        return
    table = Table(title=f"{result['network']}: {result['runs']} runs"
                        + (f", load {result['load_avg_1m']}" if "load_avg_1m" in result else ""))
    columns = list(result["rows"][0]) if result["rows"] else []
    for col in columns:
        table.add_column(col, justify="right")
    for row in result["rows"]:
        table.add_row(*(str(row[c]) for c in columns))
    out_console.print(table)


# ------------------------------------------------------------------ export
@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="A training run directory (or a checkpoint).")],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="torchscript or onnx.")
    ] = "torchscript",
    quantize: Annotated[
        str | None, typer.Option("--quantize", "-q", help="int8: dynamic int8 linear layers.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="File to write (default RUN/edge/policy-fp32.pt, "
                                         "-int8, .onnx)."),
    ] = None,
) -> None:
    """Export a trained policy with its observation normalisation as one file for edge devices."""
    from agents.export import FORMATS, QUANTIZATIONS, export_policy

    with user_errors():
        if fmt not in FORMATS:
            raise BadInput(f"--format: unknown {fmt!r}; choose from {', '.join(FORMATS)}")
        if quantize is not None and quantize not in QUANTIZATIONS:
            raise BadInput(f"--quantize: unknown {quantize!r}; choose from "
                           f"{', '.join(QUANTIZATIONS)}")
        path = export_policy(run, fmt, quantize=quantize, out=out)
    typer.echo(f"exported {fmt} {quantize or 'fp32'}: {path} ({path.stat().st_size} bytes); "
               f"run it with --controllers exported:{path}")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
