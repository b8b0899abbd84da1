"""Training a signal policy on a network, episode by episode, into a run directory.

The run directory holds ``spec.toml`` (the resolved settings),
``checkpoints/last.pt`` (everything needed to resume, written after every
episode), ``checkpoints/best.pt`` (the policy with the lowest evaluation
delay), ``curves.csv`` (one row per update and one per episode),
``plots/learning_curve.png`` and ``log.txt``.

Training episodes use SUMO seeds from :func:`training_seed`, evaluation
episodes the seeds :attr:`TrainSpec.evaluation_seeds` (10000 on); neither overlaps
the seeds ``0..N-1`` that ``compare`` and ``evaluate`` use, so those are held out.

With :attr:`TrainSpec.simulations` at N, training runs in rounds of N episodes
simulated at once (:mod:`simulator.vector`), the learner acting for all of them
in one batch: round ``r`` runs episodes ``r*N .. r*N+N-1``, each with its own
training seed, and ``curves.csv`` holds one row per finished episode, numbered
so. A round's updates are logged under its first episode, its evaluation (when
one of its episodes is due one) on its last, and checkpoints fall between rounds.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import AfterValidator, Field, field_validator, model_validator

from agents import checkpoint
from agents.dqn import DQN, DQNConfig
from agents.errors import ConfigError
from agents.federated import FederatedConfig, FederatedDQN
from agents.learner import Learner
from agents.models import SignalNetwork, pad
from agents.names import ALGOS
from agents.normalize import RunningNormalizer
from agents.optim import DivergenceError, OptimConfig, batch_size
from agents.ppo import PPO, PPOConfig
from agents.settings import Settings, one_of
from experiments import layout, results
from experiments.curves import CurveLog, plot_learning_curve
from networks import Scenario
from simulator.cleaning import MissingFlags
from simulator.observations import OBSERVATIONS, ObservationFunction
from simulator.options import SimulationOptions
from simulator.parallel import TrafficSignalParallelEnv
from simulator.rewards import REWARDS
from simulator.vector import SimulationVector

FLAT_SIMULATION = ("decision_interval", "min_green", "max_green", "faults", "cleaning")
"""Simulation settings that a training spec once held at its top level (checkpoints and
``spec.toml`` of older runs); given there, they are read into :attr:`TrainSpec.simulation`."""


class TrainSpec(Settings):
    """Everything that defines a training run (written to ``spec.toml``)."""

    algo: Annotated[str, AfterValidator(one_of(ALGOS))] = "dqn"
    """Learner: ``dqn`` or ``ppo``."""
    episodes: int = Field(default=100, ge=1)
    """Training episodes over the scenario's whole horizon (the most, with a budget)."""
    schedule_episodes: int | None = Field(default=None, ge=1)
    """Episodes the schedules (exploration, learning rate) are planned over; later episodes
    go on at their final values. ``None``: :attr:`episodes`."""
    budget_s: float | None = Field(default=None, gt=0)
    """Wall seconds of training (evaluations included): once they are spent and the planned
    episodes done, no round starts (the last ends with an evaluation). ``None``: no limit."""
    seed: int = 0
    """Seed of the learner (torch, numpy, random) and of the training episodes' SUMO seeds."""
    observation: Annotated[str, AfterValidator(one_of(tuple(OBSERVATIONS)))] = "queue"
    """Observation function (``queue`` or ``pressure``)."""
    reward: Annotated[str, AfterValidator(one_of(tuple(REWARDS)))] = "delay"
    """Reward function (``delay``, ``waiting-time``, ``queue``, ``pressure``)."""
    reward_scale: float = Field(default=0.01, gt=0)
    """Rewards are multiplied by this before learning."""
    simulation: SimulationOptions = Field(default_factory=SimulationOptions)
    """How the training and evaluation episodes are simulated: decision interval, green
    limits, and the sensor faults and cleaning the policy sees (``zero-flag`` cleaning adds
    a missing flag per lane to the observation)."""
    shared: bool = True
    """One network for every intersection (else one per intersection)."""
    hidden: tuple[Annotated[int, Field(ge=1)], ...] = Field(default=(64, 64), min_length=1)
    """Hidden layer widths."""
    eval_every: int = Field(default=5, ge=1)
    """Episodes between greedy evaluations on :attr:`eval_seed` (and at the last episode)."""
    eval_seed: int = 10_000
    """SUMO seed of the evaluation episodes."""
    eval_seeds: int | None = Field(default=None, ge=1, le=100)
    """Episodes of each evaluation, on seeds ``eval_seed, eval_seed + 1, ...``; their mean
    delay selects ``best.pt`` (one checkpoint chosen on one draw of traffic may be one
    that jams on the next). ``None`` and 1 are one seed (and so hashed, as before)."""
    normalize: bool = False
    """Normalise observations by running mean and std (:mod:`agents.normalize`),
    kept with the policy in its checkpoint."""
    optim: OptimConfig = OptimConfig()
    """Optimiser, schedule, batches and regularisation."""
    dqn: DQNConfig = DQNConfig()
    """DQN settings (used when ``algo`` is ``dqn``)."""
    ppo: PPOConfig = PPOConfig()
    """PPO settings (used when ``algo`` is ``ppo``)."""
    federated: FederatedConfig | None = None
    """Federated DQN (:mod:`agents.federated`): each intersection trains its own copy and a
    server averages them every ``local_episodes`` episodes; ``None``: off."""
    simulations: int | None = Field(default=None, ge=1)
    """Training episodes simulated at once, the learner deciding for all of them in one
    batch (results depend on it; ``greenphase train --simulations 0`` takes one per core,
    see :func:`with_simulations`). ``None`` and 1 are one at a time, the way runs were
    trained before the setting existed (and so hashed: ``None`` stays out of a run's hash)."""

    @field_validator("simulations", "eval_seeds", mode="after")
    @classmethod
    def _one_is_none(cls, value: int | None) -> int | None:
        return None if value == 1 else value

    @model_validator(mode="before")
    @classmethod
    def _flat_simulation(cls, data: Any) -> Any:
        """Read the top-level simulation settings of older specs into ``simulation``."""
        if not isinstance(data, Mapping) or not any(k in data for k in FLAT_SIMULATION):
            return data
        data = dict(data)
        simulation = data.get("simulation", {})
        if isinstance(simulation, SimulationOptions):
            simulation = simulation.model_dump()
        flat = {k: data.pop(k) for k in FLAT_SIMULATION if k in data}
        data["simulation"] = {**simulation, **flat} if isinstance(simulation, Mapping) \
            else simulation
        return data

    @field_validator("hidden", mode="before")
    @classmethod
    def _hidden_list(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value  # TOML and checkpoints

    @model_validator(mode="after")
    def _consistent(self) -> TrainSpec:
        if self.planned_episodes > self.episodes:
            raise ValueError(f"schedule_episodes ({self.schedule_episodes}) must not exceed "
                             f"episodes ({self.episodes})")
        if self.federated is None:
            return self
        if self.algo != "dqn" or not self.shared:
            raise ValueError("federated training takes algo dqn and the shared architecture")
        if self.normalize:
            raise ValueError("federated training keeps observations at each intersection: "
                             "it takes no central observation normalisation")
        if self.simulation_count > 1:
            raise ValueError(f"federated training simulates one episode at a time: "
                             f"simulations must be 1, got {self.simulation_count}")
        if self.budget_s is not None:  # it could stop between a round's averagings
            raise ValueError("federated training runs its rounds whole: it takes no budget_s")
        if self.episodes % self.federated.local_episodes:
            raise ValueError(f"episodes ({self.episodes}) must be a multiple of "
                             f"local_episodes ({self.federated.local_episodes})")
        return self

    # the simulation settings by their names of old: spec.decision_interval, ...
    decision_interval = property(lambda self: self.simulation.decision_interval)
    min_green = property(lambda self: self.simulation.min_green)
    max_green = property(lambda self: self.simulation.max_green)
    faults = property(lambda self: self.simulation.faults)
    cleaning = property(lambda self: self.simulation.cleaning)

    @property
    def simulation_count(self) -> int:
        """How many training episodes are simulated at once."""
        return self.simulations or 1

    @property
    def planned_episodes(self) -> int:
        """The episodes the schedules run their course over."""
        return self.schedule_episodes or self.episodes

    @property
    def evaluation_seeds(self) -> list[int]:
        """The SUMO seeds of each evaluation (tuning seeds: never held out, never trained on)."""
        return list(range(self.eval_seed, self.eval_seed + (self.eval_seeds or 1)))

    @property
    def observation_fn(self) -> ObservationFunction:
        """The observation function the policy sees (with missing flags under ``zero-flag``)."""
        observation = OBSERVATIONS[self.observation]()
        return MissingFlags(observation) if self.simulation.cleaning == "zero-flag" else observation

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (for TOML and checkpoints); :meth:`from_dict` reads them."""
        data = self.model_dump()
        if self.federated is None:
            del data["federated"]  # TOML has no null; absent means off
        data["hidden"] = list(self.hidden)
        data["simulations"] = self.simulation_count  # written out, so a rerun reads it
        data["simulation"]["sumo_args"] = list(self.simulation.sumo_args)
        return data


def training_seed(spec: TrainSpec, episode: int) -> int:
    """SUMO seed of training episode ``episode``: never one of 0..99_999.

    Episodes are numbered across simulations (round ``r`` of N runs ``r*N+i``).
    """
    return 100_000 * (spec.seed + 1) + episode


MAX_DEFAULT_SIMULATIONS = 8  # the most simulations default_simulations() asks for


def default_simulations() -> int:
    """One simulation per core this process may use, at most :data:`MAX_DEFAULT_SIMULATIONS`."""
    return max(1, min(len(os.sched_getaffinity(0)), MAX_DEFAULT_SIMULATIONS))


def with_simulations(spec: TrainSpec, simulations: int) -> TrainSpec:
    """``spec`` with ``simulations`` at once; 0: one per core (one for federated).

    One is the default: a run's result depends on the count, and a count that followed
    the machine's cores would make the result follow them too.
    """
    if simulations == 0:
        simulations = 1 if spec.federated is not None else default_simulations()
    return spec.replace(simulations=simulations)


class RunExistsError(ValueError):
    """Training into a run directory that already holds a run, without resume or overwrite."""


@dataclass(frozen=True)
class TrainResult:
    """How a training run ended."""

    run: Path
    episodes: int
    best_eval_delay_s: float
    wall_s: float
    stopped: str = ""
    """Why training stopped early (divergence), or empty."""


def make_learner(spec: TrainSpec, net: SignalNetwork, steps_per_episode: float,
                 rng: np.random.Generator) -> Learner:
    """The learner ``spec`` names for ``net``, its schedules planned over the whole run."""
    total_steps = int(spec.planned_episodes * steps_per_episode)
    if spec.federated is not None:
        return FederatedDQN(net, spec.federated, spec.dqn, spec.optim, total_steps, rng)
    if spec.algo == "dqn":
        return DQN(net, spec.dqn, spec.optim, total_steps, rng)
    # PPO updates after a round of episodes once episodes_per_update are in
    n, total, waiting = spec.simulation_count, 0, 0
    for first in range(0, spec.planned_episodes, n):
        waiting += min(n, spec.planned_episodes - first)
        if waiting >= spec.ppo.episodes_per_update:
            samples = int(steps_per_episode * len(net.obs_dims) * waiting)
            total += spec.ppo.epochs * -(-samples // batch_size(spec.optim, samples))
            waiting = 0
    return PPO(net, spec.ppo, spec.optim, total, rng)


class Trainer:
    """Runs the training loop of one spec on one scenario into a run directory."""

    def __init__(self, spec: TrainSpec, scenario: Scenario, run: Path) -> None:
        self.spec, self.scenario, self.run = spec, scenario, run
        self.sims = SimulationVector(
            lambda: TrafficSignalParallelEnv(
                scenario,
                observation=spec.observation_fn,
                reward=REWARDS[spec.reward](),
                options=spec.simulation,
            ),
            spec.simulation_count,
        )
        env = self.sims.envs[0]
        self.agents = list(env.possible_agents)
        self.agent_index = torch.arange(len(self.agents))
        obs_dims = [int(np.prod(env.observation_space(a).shape or (0,)))
                    for a in self.agents]
        num_phases = [v.layout.num_phases for v in env.sim.views]
        kind = "q" if spec.algo == "dqn" else "actor-critic"
        # ---- seeding: everything random in training derives from spec.seed
        random.seed(spec.seed)
        torch.manual_seed(spec.seed)
        self.rng = np.random.default_rng(spec.seed)
        self.net = SignalNetwork(obs_dims, num_phases, spec.hidden, shared=spec.shared, kind=kind)
        self.normalizer = RunningNormalizer(self.net.obs_size) if spec.normalize else None
        steps_per_episode = -(-scenario.horizon_s // spec.simulation.decision_interval)
        self.learner = make_learner(spec, self.net, steps_per_episode, self.rng)
        self.policy_meta = {
            "kind": kind, "obs_dims": obs_dims, "num_phases": num_phases,
            "hidden": list(spec.hidden), "shared": spec.shared,
            "observation": spec.observation, "tls_ids": self.agents,
            "network": scenario.name, "decision_interval": spec.simulation.decision_interval,
            "missing_flags": spec.simulation.cleaning == "zero-flag",
            "cleaning": spec.simulation.cleaning, "faults": spec.simulation.faults,
        }
        self.episode = 0
        self.best = float("inf")
        self.wall = 0.0

    # ------------------------------------------------------------ rollouts
    def _obs(self, obs: list[dict[str, np.ndarray]], *, learn: bool) -> torch.Tensor:
        """Every simulation's intersections as rows, simulation by simulation."""
        rows = [o[a] for o in obs for a in self.agents]
        # a reading still missing (faults without cleaning) enters as 0, as in trained:RUN
        x = torch.nan_to_num(pad(rows, self.net.obs_size), nan=0.0)
        if self.normalizer is None:
            return x
        if learn:
            self.normalizer.update(x)
        return self.normalizer(x)

    def run_round(self, seeds: list[int], *,
                  learn: bool) -> tuple[list[float], list[dict[str, float]], list[dict]]:
        """One episode per seed, simulated at once, the learner deciding for all of them.

        With ``learn`` the learner explores and updates. Returns each episode's return
        and KPIs, and the update logs.
        """
        obs = self._obs(self.sims.reset(seeds), learn=learn)
        agent = self.agent_index.repeat(len(seeds))
        totals, logs = [0.0] * len(seeds), []
        # with several simulations the learner learns from a step while the next one is
        # simulated, so it acts one step behind its own updates
        waiting: list[tuple[Any, ...]] = []
        while self.sims.running:
            action = self.learner.act(obs, agent, explore=learn)
            self.sims.send([dict(zip(self.agents, map(int, phases), strict=True))
                            for phases in action.reshape(len(seeds), -1)])
            if waiting:
                logs += self.learner.observe(*waiting.pop())
            steps = self.sims.receive()
            reward = np.array([[step[1][a] for a in self.agents] for step in steps],
                              dtype=np.float32)
            reward *= self.spec.reward_scale
            totals = [t + float(r.sum()) for t, r in zip(totals, reward, strict=True)]
            next_obs = self._obs([step[0] for step in steps], learn=learn)
            if learn:
                waiting.append((obs, agent, action, reward.reshape(-1), next_obs))
                if self.spec.simulation_count == 1:
                    logs += self.learner.observe(*waiting.pop())
            obs = next_obs
        if learn:
            logs += [log for step in waiting for log in self.learner.observe(*step)]
            logs += self.learner.end_of_episode()
        return totals, [r.kpis for r in self.sims.results()], logs

    def train_round(self) -> list[dict[str, Any]]:
        """A round of training episodes (and an evaluation if due): its ``curves.csv`` rows."""
        spec, first, started = self.spec, self.episode, time.perf_counter()
        episodes = range(first, min(first + spec.simulation_count, spec.episodes))
        returns, kpis, logs = self.run_round([training_seed(spec, e) for e in episodes],
                                             learn=True)
        last = episodes.stop == spec.episodes or \
            self.out_of_time(episodes.stop, time.perf_counter() - started)
        due = last or any((e + 1) % spec.eval_every == 0 for e in episodes)
        eval_delay = self.evaluate() if due else float("nan")
        self.episode = episodes.stop
        self.wall += time.perf_counter() - started
        rows: list[dict[str, Any]] = [{"kind": "update", "episode": first, **log} for log in logs]
        shared = {"wall_s": self.wall, "lr": logs[-1]["lr"] if logs else float("nan"),
                  "epsilon": self.learner.epsilon, "bytes": self.learner.episode_bytes}
        for e, ret, k in zip(episodes, returns, kpis, strict=True):
            rows.append({"kind": "episode", "episode": e, "return": ret,
                         "mean_delay_s": k["mean_delay_s"], **shared,
                         "eval_delay_s": eval_delay if e == episodes[-1] else float("nan")})
        return rows

    def out_of_time(self, episodes: int, running_s: float = 0.0) -> bool:
        """Whether ``episodes`` done end the run by its budget (``running_s``: a round's so far)."""
        budget, planned = self.spec.budget_s, self.spec.planned_episodes
        return budget is not None and episodes >= planned and self.wall + running_s >= budget

    def evaluate(self) -> float:
        """Mean delay of greedy episodes on the evaluation seeds, several at once."""
        seeds, n = self.spec.evaluation_seeds, self.spec.simulation_count
        delays = [k["mean_delay_s"] for first in range(0, len(seeds), n)
                  for k in self.run_round(seeds[first:first + n], learn=False)[1]]
        return float(np.mean(delays))

    # ---------------------------------------------------------- checkpoints
    def _rng_state(self) -> dict[str, Any]:
        return {"numpy": self.rng.bit_generator.state, "torch": torch.get_rng_state(),
                "python": list(random.getstate()[1]), "python_version": random.getstate()[0],
                "python_gauss": random.getstate()[2]}

    def _set_rng_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["numpy"]
        torch.set_rng_state(state["torch"])
        random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))

    def save(self, name: str, *, full: bool) -> Path:
        """Write ``checkpoints/<name>.pt``: the policy, and with ``full`` the training state."""
        payload: dict[str, Any] = {
            "spec": self.spec.to_dict(),
            "episode": self.episode,
            "best_eval_delay_s": self.best,
            "policy": {**self.policy_meta, "net": self.net.state_dict()},
        }
        if self.normalizer is not None:
            payload["policy"]["obs_norm"] = self.normalizer.policy_state()
        if full:
            payload["learner"] = self.learner.state_dict()
            if self.normalizer is not None:
                payload["normalizer"] = self.normalizer.state_dict()
            payload["rng"] = self._rng_state()
            payload["wall_s"] = self.wall
        return checkpoint.save(self.run / "checkpoints" / f"{name}.pt", payload)

    def restore(self) -> None:
        """Continue from ``checkpoints/last.pt``."""
        data = checkpoint.load(self.run / "checkpoints" / "last.pt")
        if "learner" not in data:
            raise checkpoint.CheckpointError(f"{self.run}: last.pt holds no training state")
        if TrainSpec.from_dict(data["spec"]) != self.spec:
            raise ConfigError(f"{self.run}: the checkpoint was trained with other settings")
        self.learner.load_state_dict(data["learner"])
        if self.normalizer is not None:
            self.normalizer.load_state_dict(data["normalizer"])
        self._set_rng_state(data["rng"])
        self.episode = int(data["episode"])
        self.best = float(data["best_eval_delay_s"])
        self.wall = float(data.get("wall_s", 0.0))

    def close(self) -> None:
        """Stop SUMO."""
        self.sims.close()


def train(spec: TrainSpec, scenario: Scenario, run: Path, *, resume: bool = False,
          overwrite: bool = False,
          on_episode: Callable[[dict[str, Any]], None] | None = None,
          reference: bool = True) -> TrainResult:
    """Train ``spec`` on ``scenario`` into ``run``; resume from its last checkpoint if asked.

    With ``reference`` (the default) the run ends by writing ``reference.json``, what the
    policy's detectors report, for ``greenphase monitor``; a run made only to be timed and
    thrown away leaves it out.

    A run directory that already holds a training run is only reused with
    ``resume`` (continue it) or ``overwrite`` (start again).
    """
    torch.set_num_threads(1)  # small networks: threads cost more than they give
    if not resume and not overwrite and (run / "checkpoints" / "last.pt").exists():
        raise RunExistsError(
            f"{run} already holds a training run: use --resume to continue it "
            "or --overwrite to start again"
        )
    layout.claim(run, "train", resume=resume, overwrite=overwrite)
    results.ensure_writable(run)
    trainer = Trainer(spec, scenario, run)
    try:
        if resume:
            trainer.restore()
        spec_doc = {"command": "train", "network": scenario.name,
                    "net_file": str(scenario.net_file),
                    "route_files": [str(r) for r in scenario.route_files],
                    "begin": scenario.begin, "end": scenario.end, **spec.to_dict()}
        results.write_toml(run / "spec.toml", spec_doc)
        curves = CurveLog(run / "curves.csv", resume_at=trainer.episode if resume else None)
        stopped = ""
        try:
            while trainer.episode < spec.episodes and not trainer.out_of_time(trainer.episode):
                first = trainer.episode
                try:
                    rows = trainer.train_round()
                except DivergenceError as err:
                    stopped = f"training stopped at episode {first}: {err}"
                    break
                curves.write(rows)
                episodes = [row for row in rows if row["kind"] == "episode"]
                if episodes[-1]["eval_delay_s"] < trainer.best:
                    trainer.best = episodes[-1]["eval_delay_s"]
                    trainer.save("best", full=False)
                trainer.save("last", full=True)
                for row in episodes:
                    if on_episode is not None:
                        on_episode(row)
        finally:
            curves.close()
        plot_learning_curve(run / "curves.csv", run / "plots" / "learning_curve.png")
        log = (f"greenphase train: {trainer.episode} episodes, best evaluation delay "
               f"{trainer.best:.2f} s, {trainer.wall:.1f} s\n")
        if stopped:
            log += stopped + "\n"
        elif trainer.episode < spec.episodes:
            log += f"the wall budget ({spec.budget_s:g} s) was spent: no round started after it\n"
        results.write_text(run / "log.txt", log)
        # what the deployed policy's detectors report, for `greenphase monitor` to compare with
        if reference:
            from experiments.monitor import write_trained_reference

            write_trained_reference(run, scenario, spec.simulation, spec.eval_seed)
        return TrainResult(run, trainer.episode, trainer.best, trainer.wall, stopped)
    finally:
        trainer.close()
