"""Speed of learning: decision steps per second while a DQN trains, side by side in one run.

``greenphase bench --train`` runs, each in a fresh worker interpreter
(:mod:`experiments.bench`'s), one DQN training of :data:`TRAIN_EPISODES`
episodes' worth of decision steps per row:

- ``sb3-dqn:sumo-rl``: Stable-Baselines3's DQN on sumo-rl's ``SumoEnvironment``
  (its default observation and reward): single agent on a network with one
  signal; on a network with several, sumo-rl's multi-agent env with every signal
  one environment of an SB3 ``VecEnv``
  (:class:`experiments.bench_sb3.SharedSignals`), so that one
  DQN with one set of weights decides for all of them, as greenphase's shared
  network does (every signal's spaces must then be alike);
- ``sb3-dqn:greenphase``: the same DQN on greenphase's Gymnasium env
  (:class:`~simulator.env.TrafficSignalEnv`, its default observation and reward;
  one signal only);
- ``greenphase-dqn:1`` and ``greenphase-dqn:N``: greenphase's own trainer
  (:class:`experiments.train.Trainer`) with one simulation, and with one per
  core (:func:`experiments.train.default_simulations`), evaluation and
  checkpoints left out.

The traffic is made comparable: every row simulates the scenario's own net and
route files over the same horizon, deciding every :data:`DELTA_TIME` seconds
under sumo-rl's phase rules (2 s yellow, no all-red, 5 s minimum green:
:func:`comparable_options`), so a row's decision steps are the same in number.
A simulated second costs SUMO more the more vehicles it moves, and with their
usual decaying exploration the rows' traffic would follow what each learner has
learned by then: measured on cologne1, SB3 on sumo-rl's reward kept 49 vehicles
in the network, the learners on greenphase's reward 92 to 123, a random policy
about 70. So every row explores throughout (:data:`EPSILON`) and runs every
episode on SUMO seed :data:`SEED`, as sumo-rl's env does: each acts at random
(SB3's two rows draw the very same actions), the traffic is one random policy's
in every row, and each learns as usual meanwhile (an update every decision step
from its replay buffer). Every row reports the vehicles in or waiting to enter
the network on average over its run (:func:`mean_vehicles`; sumo-rl's row
counts them after each step, greenphase's rows sum their trips' travel times),
which shows the traffic alike. Both DQNs learn with the same settings,
greenphase's defaults but for the exploration: Adam at 1e-3, batches of 64, a
64x64 network, replay of 50 000, learning from 1 000 transitions, one update a
step, a target copy every 500, gradients clipped at 10, one torch thread.
Neither runs its network to act while every action is drawn at random.
(greenphase's is double DQN; with N simulations it makes one update of N
batches per step of all N.) SB3's rows need stable-baselines3 installed (the
``bench`` extra), and its row on greenphase's env a network with one signal;
where either is missing they are left out with one line that says so. With
several signals SB3's DQN counts a transition per signal as a time step, as it
counts one per environment of a ``VecEnv``: it learns over the same decision
steps times the signals, makes one update per decision step as greenphase's
does, and copies its target network every 500 transitions.

Each row also reports the CPU time the whole machine spent busy while it learned
(:func:`busy_cpu_s`: every process of the row, its simulations included, and
anything else running), which bounds the steps per second a row can reach on the
machine's cores.
"""

from __future__ import annotations

import importlib.util
import math
import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
from rich.table import Table

from experiments.bench import (
    DELTA_TIME,
    SEED,
    BenchError,
    _run_in_worker,
    _start_fork_server,
    sumo_rl_env,
)

if TYPE_CHECKING:
    from networks import Scenario
    from simulator.options import SimulationOptions

TRAIN_EPISODES = 4
"""Episodes' worth of decision steps each row learns over (2 880 steps on cologne1)."""

EPSILON = 1.0
"""Every row's exploration rate throughout: each acts at random while it learns, so each
moves the traffic of one policy (see the module's docstring)."""

SB3_ROWS = ("sb3-dqn:sumo-rl", "sb3-dqn:greenphase")
UNLIKE_SIGNALS = "sumo-rl gives the signals unlike observations or actions"
"""What the ``sb3-dqn:sumo-rl`` row answers where one network cannot serve every signal."""
GREENPHASE_ROW = "greenphase-dqn"


def train_rows(scenario: Scenario, simulations: int) -> tuple[list[str], list[str]]:
    """The rows this machine can measure on ``scenario``, and one line per row left out."""
    notes: list[str] = []
    rows: list[str] = []
    if importlib.util.find_spec("stable_baselines3") is None:
        notes.append("stable-baselines3 is not installed (pip install 'greenphase[bench]'): "
                     "its rows are left out")
    elif len(scenario.net.tls_ids) != 1:
        rows.append(SB3_ROWS[0])
        notes.append(f"SB3's DQN on greenphase's Gymnasium env drives one signal and "
                     f"{scenario.name} has {len(scenario.net.tls_ids)}: that row is left out "
                     f"(on sumo-rl's env one DQN decides for every signal)")
    else:
        rows += SB3_ROWS
    rows += [f"{GREENPHASE_ROW}:{n}" for n in sorted({1, simulations})]
    return rows, notes


def decision_steps(scenario: Scenario, episodes: int = TRAIN_EPISODES) -> int:
    """Decision steps of ``episodes`` episodes over the scenario's horizon."""
    return episodes * -(-scenario.horizon_s // DELTA_TIME)


def comparable_options(scenario: Scenario) -> SimulationOptions:
    """The bench's simulation settings for greenphase: sumo-rl's phase rules and decisions.

    sumo-rl shows a 2 s yellow and no all-red and keeps a green at least 5 s; under
    the network's own clearance times (cologne1: a 3 s yellow and all-red) the same
    exploring policy loses more time to each change, the network fills (124 vehicles
    on average against 72 under a random policy) and every simulated second costs
    more. Timing the two on one set of phase rules times learning, not the rules.
    """
    # imported here: the simulator imports traci, which sumo-rl must import first (as libsumo)
    from simulator.options import SimulationOptions

    return SimulationOptions.for_protocol("sumo-rl", scenario.name,
                                          decision_interval=DELTA_TIME)


# ------------------------------------------------------------------ in a worker
def busy_cpu_s() -> float | None:
    """CPU seconds the machine has spent busy since it started (Linux), else None.

    From ``/proc/stat``: every core's user, nice, system, irq, softirq and steal time;
    idle and I/O wait left out.
    """
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            ticks = [int(f) for f in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    if len(ticks) < 8:
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def learning_run(row: str, scenario: Scenario) -> Callable[[], dict[str, float]]:
    """Build a row's learner and environment; the callable learns (the part that is timed).

    The callable returns ``vehicles``, those in or waiting to enter the network on average
    over the run (:func:`mean_vehicles`: how much traffic each step cost SUMO to move), and,
    where the machine says it, ``cpu_s``, its busy CPU seconds meanwhile (:func:`busy_cpu_s`).
    """
    learn = _learning_run(row, scenario)

    def measured() -> dict[str, float]:
        before = busy_cpu_s()
        out = {"vehicles": learn()}
        after = busy_cpu_s()
        if before is not None and after is not None:
            out["cpu_s"] = after - before
        return out

    return measured


def _learning_run(row: str, scenario: Scenario) -> Callable[[], float]:
    import torch

    torch.set_num_threads(1)  # as greenphase trains: tiny networks lose on more threads
    if row.startswith(f"{GREENPHASE_ROW}:"):
        return _greenphase_run(scenario, int(row.split(":")[1]))
    if row not in SB3_ROWS:
        raise ValueError(f"unknown row {row!r}")
    from stable_baselines3 import DQN

    steps = decision_steps(scenario)
    if row == "sb3-dqn:sumo-rl" and len(scenario.net.tls_ids) > 1:
        from experiments.bench_sb3 import SharedSignals

        env: Any = SharedSignals(sumo_rl_env(scenario))
        steps *= env.num_envs  # SB3 counts a time step per signal
    elif row == "sb3-dqn:sumo-rl":
        env = _PolledTraffic(sumo_rl_env(scenario, single_agent=True))
    else:
        from simulator.env import TrafficSignalEnv

        _start_fork_server()
        env = _TrippedTraffic(TrafficSignalEnv(scenario, options=comparable_options(scenario)))
    model = DQN(
        "MlpPolicy", env, learning_rate=1e-3, buffer_size=50_000, learning_starts=1_000,
        batch_size=64, gamma=0.9, train_freq=1, gradient_steps=1, target_update_interval=500,
        exploration_fraction=0.3, exploration_initial_eps=EPSILON, exploration_final_eps=EPSILON,
        max_grad_norm=10.0, policy_kwargs={"net_arch": [64, 64]}, seed=SEED, device="cpu",
    )

    def learn() -> float:
        model.learn(total_timesteps=steps)
        env.close()
        return env.vehicles()

    return learn


def vehicles_on(sumo: Any) -> int:
    """Vehicles in or waiting to enter the network now, from sumo-rl's libsumo connection.

    Two libsumo calls (a few microseconds against a step's milliseconds).
    """
    return int(sumo.vehicle.getIDCount()) + len(sumo.simulation.getPendingVehicles())


class _PolledTraffic(gym.Wrapper):  # type: ignore[type-arg]
    """sumo-rl's env, counting after every step the vehicles in or waiting to enter the network."""

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        self.counts: list[int] = []

    def step(self, action: Any) -> Any:
        out = self.env.step(action)
        sumo: Any = getattr(self.env.unwrapped, "sumo")  # noqa: B009 - sumo-rl's connection
        self.counts.append(vehicles_on(sumo))
        return out

    def vehicles(self) -> float:
        return statistics.fmean(self.counts)


class _TrippedTraffic(gym.Wrapper):  # type: ignore[type-arg]
    """greenphase's env, keeping each episode's vehicle-seconds from its trips.

    Every episode runs on SUMO seed :data:`SEED`, as sumo-rl's env runs them: with one
    stream of random actions (SB3 seeds its action space alike in both rows) the two SB3
    rows then move the same traffic.
    """

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        self.episodes: list[dict[str, float]] = []

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        return self.env.reset(seed=SEED, options=options)

    def step(self, action: Any) -> Any:
        out = self.env.step(action)
        if "episode_kpis" in out[4]:
            self.episodes.append(out[4]["episode_kpis"])
        return out

    def vehicles(self) -> float:
        horizon: float = getattr(self.env.unwrapped, "sim").scenario.horizon_s  # noqa: B009
        return mean_vehicles(self.episodes, horizon)


def mean_vehicles(episodes: list[dict[str, float]], horizon_s: float) -> float:
    """Vehicles in or waiting to enter the network, on average over whole episodes.

    Each due vehicle's travel time (its wait to be inserted included, up to the horizon
    for those still travelling) summed, over the episodes' simulated time.
    """
    seconds = sum(k["mean_travel_time_s"] * k["vehicles"] for k in episodes if k["vehicles"])
    return seconds / (horizon_s * len(episodes)) if episodes else math.nan


def _greenphase_run(scenario: Scenario, simulations: int) -> Callable[[], float]:
    from agents.dqn import DQNConfig
    from experiments.train import Trainer, TrainSpec

    _start_fork_server()
    spec = TrainSpec(algo="dqn", episodes=TRAIN_EPISODES, simulations=simulations,
                     seed=SEED, simulation=comparable_options(scenario),
                     dqn=DQNConfig(epsilon_start=EPSILON, epsilon_end=EPSILON))
    trainer = Trainer(spec, scenario, Path(tempfile.mkdtemp(prefix="greenphase-bench-")))

    def learn() -> float:
        kpis: list[dict[str, float]] = []
        try:
            for first in range(0, spec.episodes, simulations):
                episodes = range(first, min(first + simulations, spec.episodes))
                # SUMO seed SEED in every episode, as sumo-rl's env runs them
                kpis += trainer.run_round([SEED] * len(episodes), learn=True)[1]
        finally:
            trainer.close()
        return mean_vehicles(kpis, scenario.horizon_s)

    return learn


# ------------------------------------------------------------------ the bench
def bench_train(scenario: Scenario, *, repeats: int = 1, simulations: int | None = None,
                progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Decision steps per second while learning, every row ``repeats`` times, interleaved.

    Args:
        scenario: The network, its demand and the horizon.
        repeats: Trainings per row; the reported rate is their median.
        simulations: greenphase's simulations at once (default: one per core).
        progress: Called with a line after each timed training, and with each row left out.

    Returns:
        ``{"network", "begin_s", "end_s", "decision_s", "steps", "repeats", "left_out",
        "rows"}``; each row ``{"name", "wall_s" (median), "walls_s", "steps_per_s",
        "vehicles", "cpu_s", "ratio_to_sb3_sumo_rl"}`` (the last None without that row;
        ``vehicles`` the mean over the repeats of :func:`mean_vehicles`; ``cpu_s`` the
        median of the machine's busy CPU seconds during each training, None where the
        machine does not say). JSON-serialisable.

    Raises:
        ValueError: ``repeats`` is below 1.
        BenchError: A row failed to run.
    """
    from experiments.train import default_simulations

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    rows, notes = train_rows(scenario, simulations or default_simulations())
    for line in notes:
        if progress is not None:
            progress(line)
    steps = decision_steps(scenario)
    walls: dict[str, list[float]] = {row: [] for row in rows}
    vehicles: dict[str, list[float]] = {row: [] for row in rows}
    cpus: dict[str, list[float]] = {row: [] for row in rows}
    for r in range(repeats):
        for row in list(rows):
            try:
                reply = _run_in_worker(row, scenario)
            except BenchError as err:
                if row != SB3_ROWS[0] or UNLIKE_SIGNALS not in str(err):
                    raise
                rows.remove(row)  # found out on its first run: nothing of it is kept
                notes.append(f"SB3's DQN shares one network among {scenario.name}'s signals, "
                             f"and {UNLIKE_SIGNALS}: its row is left out")
                if progress is not None:
                    progress(notes[-1])
                continue
            walls[row].append(float(reply["wall_s"]))
            vehicles[row].append(float(reply["vehicles"]))
            if "cpu_s" in reply:
                cpus[row].append(float(reply["cpu_s"]))
            if progress is not None:
                progress(f"{scenario.name} repeat {r + 1}/{repeats}: {row} "
                         f"{steps / walls[row][-1]:.0f} steps/s, "
                         f"{vehicles[row][-1]:.0f} vehicles in the network")
    rates = {row: steps / statistics.median(walls[row]) for row in rows}
    reference = rates.get(SB3_ROWS[0])
    return {
        "network": scenario.name, "begin_s": scenario.begin, "end_s": scenario.end,
        "decision_s": DELTA_TIME, "steps": steps, "repeats": repeats, "left_out": notes,
        "rows": [{"name": row, "wall_s": statistics.median(walls[row]), "walls_s": walls[row],
                  "steps_per_s": rates[row], "vehicles": statistics.fmean(vehicles[row]),
                  "cpu_s": statistics.median(cpus[row]) if cpus[row] else None,
                  "ratio_to_sb3_sumo_rl": rates[row] / reference if reference else None}
                 for row in rows],
    }


def format_train_table(result: dict[str, Any]) -> Table:
    """The result of :func:`bench_train` as a table for the terminal."""
    table = Table(title=(f"{result['network']}: DQN learning over {result['steps']} decision "
                         f"steps ({result['decision_s']} s each), median of "
                         f"{result['repeats']}"))
    for column in ("name", "wall s", "steps/s", "ratio to sb3-dqn:sumo-rl",
                   "vehicles in network", "busy CPU s", "cores busy"):
        table.add_column(column, justify="left" if column == "name" else "right")
    for row in result["rows"]:
        ratio, cpu = row["ratio_to_sb3_sumo_rl"], row["cpu_s"]
        table.add_row(row["name"], f"{row['wall_s']:.1f}", f"{row['steps_per_s']:.0f}",
                      "" if ratio is None else f"{ratio:.2f}", f"{row['vehicles']:.0f}",
                      "" if cpu is None else f"{cpu:.1f}",
                      "" if cpu is None else f"{cpu / row['wall_s']:.2f}")
    return table
