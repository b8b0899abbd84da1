"""Speed of greenphase against SUMO alone and sumo-rl: one episode per row, same machine, same run.

Every row runs one episode over the scenario's whole horizon; the reported wall
time is the median of ``repeats``. The repeats are interleaved (repeat ``r``
runs every row once, then ``r + 1``) so that noise on a shared machine hits all
rows alike.

- ``sumo``: the ``sumo`` binary alone on the net and route files with the
  network's static programs; the wall time of the whole subprocess.
- ``sumo:tcmalloc``: the same command under tcmalloc, the allocator greenphase's
  own simulations run under where it is installed (only then is the row there).
- ``sumo:greenphase``: the ``sumo`` binary alone running greenphase's own
  command line for the ``greenphase:fixed`` episode: its lane-area detectors on
  the controlled incoming lanes and its tripinfo output of every vehicle
  (unfinished and never inserted ones included, which the delay metric needs),
  under greenphase's allocator (max-pressure also has detectors on the outgoing
  lanes, whose counts it weighs).
  It is what SUMO itself spends on what greenphase asks of it; a greenphase
  row's time beyond it is greenphase's own (starting the episode's process,
  reading the detectors, the sensor model, the controller, the exchange between
  processes, reading the trips back), which the table shows as the breakdown.
- ``sumo-rl:fixed`` and ``sumo-rl:random``: sumo-rl's ``SumoEnvironment`` on
  libsumo, under the static programs (``fixed_ts=True``) or random actions
  every 5 s; timed from ``reset`` through the last step and ``close``.
- ``greenphase:fixed``: :class:`~simulator.env.TrafficSignalEnv` under the
  static programs; timed from ``reset`` through the last step, which closes
  SUMO, reads the tripinfo output and computes the KPIs.
- ``greenphase:max-pressure``: :func:`experiments.runner.run_episode` with the
  max-pressure controller, building the simulation included.

libsumo holds one simulation per process and sumo-rl keeps global state in it,
so each Python row runs in a fresh worker interpreter for every repeat. The
worker imports everything and builds the environment first, then times only
the episode: interpreter start-up and imports are not counted.
"""

from __future__ import annotations

import json
import os
import pickle
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

if TYPE_CHECKING:
    from networks import Scenario

ROWS: tuple[str, ...] = (
    "sumo",
    "sumo-rl:fixed",
    "sumo-rl:random",
    "greenphase:fixed",
    "greenphase:max-pressure",
)
"""The measured rows, in the order they are run and reported."""

ALLOCATOR_ROW = "sumo:tcmalloc"
"""SUMO alone under the allocator greenphase's simulations use, where they use one.

greenphase runs its libsumo episodes under tcmalloc where it is installed
(:func:`simulator.isolation.allocator_library`), which speeds SUMO itself up;
this row shows how much, so that the ratios to plain SUMO can be read both ways.
"""


GREENPHASE_SUMO_ROW = "sumo:greenphase"
"""SUMO alone on greenphase's own command line: detectors, tripinfo output, allocator."""

SUMO_ROWS = ("sumo", ALLOCATOR_ROW, GREENPHASE_SUMO_ROW)
"""The rows that time the ``sumo`` binary alone."""


def rows() -> tuple[str, ...]:
    """The rows this machine measures.

    :data:`ROWS` with, after ``sumo``, :data:`ALLOCATOR_ROW` when greenphase's
    simulations run under tcmalloc, and :data:`GREENPHASE_SUMO_ROW`.
    """
    from simulator.isolation import allocator_library

    allocator = () if allocator_library() is None else (ALLOCATOR_ROW,)
    return (ROWS[0], *allocator, GREENPHASE_SUMO_ROW, *ROWS[1:])

SEED = 0
"""SUMO's random seed in every row, and the seed of the random actions."""

DELTA_TIME = 5
"""Seconds between decisions in the sumo-rl rows (greenphase's default is also 5 s)."""

WORKER_TIMEOUT_S = 1800.0
"""Longest one worker may take for an episode before the bench gives up."""


class BenchError(RuntimeError):
    """A row failed to run; the message names the row and the cause."""


def sumo_command(scenario: Scenario) -> list[str]:
    """The ``sumo`` command line of the ``sumo`` row: static programs, no outputs.

    Args:
        scenario: The network, its demand and the horizon.

    Returns:
        The command, binary first.
    """
    from simulator.sumo import sumo_binary

    return [
        sumo_binary("sumo"),
        "-n", str(scenario.net_file),
        "-r", ",".join(str(r) for r in scenario.route_files),
        "-b", str(scenario.begin),
        "-e", str(scenario.end),
        "--no-step-log", "true",
        "--no-warnings", "true",
        "--time-to-teleport", "-1",
        "--seed", str(SEED),
    ]  # fmt: skip


def _time_sumo(scenario: Scenario, row: str = "sumo") -> float:
    from simulator.isolation import allocator_library, preloading

    if row == GREENPHASE_SUMO_ROW:
        return _time_greenphase_command(scenario)
    cmd = sumo_command(scenario)
    env = preloading(allocator_library() if row == ALLOCATOR_ROW else None)
    return _time_command(cmd, env, row)


def _time_greenphase_command(scenario: Scenario) -> float:
    """The ``sumo:greenphase`` row: greenphase's own SUMO command, run by the binary."""
    from simulator.env import TrafficSignalEnv
    from simulator.isolation import allocator_library, preloading
    from simulator.sumo import sumo_binary

    # the command of greenphase:fixed's episode; the detectors' file lives in its folder
    env = TrafficSignalEnv(scenario, program="static")
    try:
        cmd = [sumo_binary("sumo"), *env.sim.sumo_command(SEED)]
        return _time_command(cmd, preloading(allocator_library()), GREENPHASE_SUMO_ROW)
    finally:
        env.close()


def _time_command(cmd: list[str], env: dict[str, str], row: str) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False, env=env
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"row {row!r}: sumo exited with status {proc.returncode}: {last}")
    return wall


# ------------------------------------------------------------------ workers
# Each builder runs inside a fresh worker process: it imports what the row needs,
# builds the environment, and returns the untimed-until-called episode.


def sumo_rl_env(scenario: Scenario, *, fixed: bool = False, single_agent: bool = False) -> Any:
    """sumo-rl's ``SumoEnvironment`` on libsumo over the scenario's files and horizon.

    Decisions every :data:`DELTA_TIME` seconds, SUMO seed :data:`SEED`, no outputs.
    """
    # sumo-rl picks traci or libsumo when it is imported, and raises ImportError
    # unless SUMO_HOME is set: both must be in the environment first.
    os.environ["LIBSUMO_AS_TRACI"] = "1"
    from simulator.sumo import sumo_home

    os.environ["SUMO_HOME"] = str(sumo_home())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"(sumo_rl|pettingzoo|gymnasium)(\.|$)")
        from sumo_rl import SumoEnvironment
        from sumo_rl.environment import env as sumo_rl_module

        if not sumo_rl_module.traci.isLibsumo():
            # traci imported before the variable was set: sumo-rl would talk to SUMO over a
            # socket, several times slower, and the row would time that instead
            raise BenchError("sumo-rl is not running on libsumo in this worker (traci was "
                             "imported first)")
        env = SumoEnvironment(
            net_file=str(scenario.net_file),
            route_file=",".join(str(r) for r in scenario.route_files),
            out_csv_name=None,
            use_gui=False,
            begin_time=scenario.begin,
            num_seconds=scenario.horizon_s,
            delta_time=DELTA_TIME,
            single_agent=single_agent,
            fixed_ts=fixed,
            sumo_seed=SEED,
            add_system_info=False,
            add_per_agent_info=False,
            sumo_warnings=False,
            additional_sumo_cmd="--no-step-log true",
        )
    return env


def _sumo_rl_episode(scenario: Scenario, *, fixed: bool) -> Callable[[], None]:
    env = sumo_rl_env(scenario, fixed=fixed)
    spaces = {ts: env.action_spaces(ts) for ts in env.ts_ids}
    for i, space in enumerate(spaces.values()):
        space.seed(SEED + i)

    def episode() -> None:
        env.reset(seed=SEED)
        done = False
        while not done:
            actions: dict[str, Any] = (
                {} if fixed else {ts: space.sample() for ts, space in spaces.items()}
            )
            _, _, dones, _ = env.step(actions)
            done = bool(dones["__all__"])
        env.close()

    return episode


def _start_fork_server() -> None:
    """Start greenphase's simulation server before the timing, like the imports.

    Every libsumo episode runs in a process forked from this server
    (:mod:`simulator.isolation`); it starts once per process, so it is set-up,
    not part of an episode. The fork itself is inside the timing.
    """
    from simulator.isolation import start_server

    start_server()


def _greenphase_fixed_episode(scenario: Scenario) -> Callable[[], None]:
    import libsumo  # noqa: F401 - imported here so that the timing leaves its import out

    from simulator.env import TrafficSignalEnv

    _start_fork_server()
    env = TrafficSignalEnv(scenario, program="static")
    action = env.action_space.sample()

    def episode() -> None:
        env.reset(seed=SEED)
        truncated = False
        while not truncated:
            _, _, _, truncated, _ = env.step(action)
        env.close()

    return episode


def _greenphase_max_pressure_episode(scenario: Scenario) -> Callable[[], None]:
    import libsumo  # noqa: F401 - imported here so that the timing leaves its import out

    from experiments.runner import run_episode

    _start_fork_server()

    def episode() -> None:
        run_episode(scenario, "max-pressure", SEED)

    return episode


_BUILDERS: dict[str, Callable[[Scenario], Callable[[], None]]] = {
    "sumo-rl:fixed": lambda sc: _sumo_rl_episode(sc, fixed=True),
    "sumo-rl:random": lambda sc: _sumo_rl_episode(sc, fixed=False),
    "greenphase:fixed": _greenphase_fixed_episode,
    "greenphase:max-pressure": _greenphase_max_pressure_episode,
}


def _worker_main() -> None:
    """Entry point of a worker process: read ``(row, scenario)``, time it, print the result.

    The request arrives pickled on stdin; the answer is one JSON line,
    ``{"wall_s": seconds}`` or ``{"error": text}``, on the original stdout,
    while everything SUMO, traci or sumo-rl print goes to ``/dev/null``.
    """
    row, scenario = pickle.loads(sys.stdin.buffer.read())
    answer = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    sys.stdout = open(os.devnull, "w")  # lives as long as the worker
    try:
        episode: Callable[[], dict[str, float] | None]
        if row in _BUILDERS:
            episode = _BUILDERS[row](scenario)
        else:  # a learning row of ``bench --train``
            from experiments.bench_train import learning_run

            episode = learning_run(row, scenario)
        started = time.perf_counter()
        measured = episode()
        reply: dict[str, Any] = {"wall_s": time.perf_counter() - started}
        reply.update(measured or {})  # a learning row's traffic, and the CPU it took
    except Exception as err:  # reported to the parent, which raises
        reply = {"error": f"{type(err).__name__}: {err}"}
    answer.write(json.dumps(reply) + "\n")
    answer.close()


def _time_in_worker(row: str, scenario: Scenario) -> float:
    """The row's wall time, timed in a fresh worker interpreter."""
    return float(_run_in_worker(row, scenario)["wall_s"])


def _run_in_worker(row: str, scenario: Scenario) -> dict[str, Any]:
    """The worker's answer for one row: ``wall_s``, and what a learning row measured."""
    # A fresh interpreter per row and repeat: libsumo holds one simulation per
    # process. A subprocess rather than multiprocessing's spawn, which re-runs the
    # caller's main script and so fails from scripts without a __main__ guard.
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from experiments.bench import _worker_main; _worker_main()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        out, err = proc.communicate(pickle.dumps((row, scenario)), timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise BenchError(f"row {row!r}: no result within {WORKER_TIMEOUT_S:.0f} s") from None
    lines = out.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"row {row!r}: the worker failed (exit status {proc.returncode}): {tail}")
    reply = json.loads(lines[-1])
    if "error" in reply:
        raise BenchError(f"row {row!r}: {reply['error']}")
    return dict(reply)


# -------------------------------------------------------------------- bench


def bench(
    scenario: Scenario,
    *,
    repeats: int = 3,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time one episode of every row over the scenario's horizon, ``repeats`` times, interleaved.

    Args:
        scenario: The network, its demand and the horizon.
        repeats: Episodes per row; the reported wall time is their median.
        progress: Called with one line after each timed episode.

    Returns:
        ``{"network", "begin_s", "end_s", "repeats", "rows"}``; each row is
        ``{"name", "wall_s" (median), "walls_s" (every repeat), "ratio_to_sumo",
        "own_s"}``, in :func:`rows` order; ``own_s``, for greenphase's rows, is the
        median beyond the ``sumo:greenphase`` row's (None for the others). The dict is
        JSON-serialisable.

    Raises:
        ValueError: ``repeats`` is below 1.
        BenchError: A row failed to run.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    measured = rows()
    walls: dict[str, list[float]] = {row: [] for row in measured}
    for r in range(repeats):
        for row in measured:
            if row in SUMO_ROWS:
                wall = _time_sumo(scenario, row)
            else:
                wall = _time_in_worker(row, scenario)
            walls[row].append(wall)
            if progress is not None:
                progress(f"{scenario.name} repeat {r + 1}/{repeats}: {row} {wall:.3f} s")
    medians = {row: statistics.median(w) for row, w in walls.items()}
    sumo, own_sumo = medians["sumo"], medians[GREENPHASE_SUMO_ROW]
    return {
        "network": scenario.name,
        "begin_s": scenario.begin,
        "end_s": scenario.end,
        "repeats": repeats,
        "rows": [
            {
                "name": row,
                "wall_s": medians[row],
                "walls_s": walls[row],
                "ratio_to_sumo": medians[row] / sumo,
                # beyond what SUMO spends on greenphase's command: greenphase's own time
                "own_s": medians[row] - own_sumo if row.startswith("greenphase:") else None,
            }
            for row in measured
        ],
    }


def format_table(result: dict[str, Any]) -> Table:
    """The result of :func:`bench` as a table for the terminal.

    Args:
        result: What :func:`bench` returned.

    Returns:
        A table with the columns name, wall s, ratio to SUMO and, for greenphase's
        rows, the time beyond SUMO running greenphase's own command.
    """
    table = Table(
        title=(
            f"{result['network']}: one episode {result['begin_s']}-{result['end_s']} s, "
            f"median of {result['repeats']}"
        )
    )
    table.add_column("name")
    table.add_column("wall s", justify="right")
    table.add_column("ratio to SUMO", justify="right")
    table.add_column(f"beyond {GREENPHASE_SUMO_ROW} s", justify="right")
    for row in result["rows"]:
        own = row.get("own_s")
        table.add_row(row["name"], f"{row['wall_s']:.3f}", f"{row['ratio_to_sumo']:.2f}",
                      "" if own is None else f"{own:+.3f}")
    return table


def bench_sweep(
    folder: Path, *, network: str | None = None, runs: int | None = None,
    workers: Sequence[int] | None = None, memory: bool = False, repeats: int = 1,
    horizon_s: int | None = None, progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Sweep scaling over worker counts, or with ``memory`` peak memory over a long sweep.

    Args:
        folder: The scratch folder the sweeps write into.
        network: The network (default ``grid4x4``; ``cologne1`` for memory).
        runs: Runs per sweep (default 8; 100 for memory).
        workers: Worker counts to time (default 1 and 2); for memory, the first is the
            pool's size (default: the CPU cores).
        memory: Measure peak memory (:func:`experiments.sweep.memory`) instead of the
            scaling (:func:`experiments.sweep.scaling`).
        repeats: Timings per worker count, interleaved (scaling only).
        horizon_s: Simulated seconds per run (default: the network's).
        progress: Called with a line of text as the measurement goes on.
    """
    from experiments.sweep import memory as sweep_memory
    from experiments.sweep import scaling

    if memory:
        return sweep_memory(folder, network=network or "cologne1", runs=runs or 100,
                            workers=workers[0] if workers else None, horizon_s=horizon_s,
                            progress=progress)
    return scaling(folder, network=network or "grid4x4", runs=runs or 8,
                   workers=tuple(workers or (1, 2)), repeats=repeats, horizon_s=horizon_s,
                   progress=progress)


def format_sweep_table(result: dict[str, Any]) -> Table:
    """The result of :func:`bench_sweep` as a table: one column per measured quantity."""
    load = f", load {result['load_avg_1m']}" if "load_avg_1m" in result else ""
    table = Table(title=f"{result['network']}: {result['runs']} runs{load}")
    columns = list(result["rows"][0]) if result["rows"] else []
    for col in columns:
        table.add_column(col, justify="right")
    for row in result["rows"]:
        table.add_row(*(str(row[c]) for c in columns))
    return table
