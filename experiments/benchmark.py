"""The whole benchmark in one command: ``greenphase benchmark``.

For every network of a suite, three stages, each resumable on its own:

1. **tune**: Webster, SUMO's actuated control and max-pressure searched on tuning demand
   (:func:`experiments.tune.tune`; ``NET/tune-CONTROLLER/params.toml``);
2. **train**: the learned policies (DQN by default), each within the wall budget
   (``NET/LEARNER``), one simulation per core: a short calibration run of the same
   trainer times an episode, the schedules (exploration, learning rate) are planned
   over the episodes it expects to fit, and training goes on at their final values
   until the budget is spent (episodes run faster once the policy stops jamming the
   network, so the calibration's estimate is low); the checkpoint kept is the one with
   the lowest mean delay on the tuning seeds the baselines are searched on
   (:data:`TUNING_SEEDS`);
3. **evaluate**: every classic controller untuned and tuned, and the learned policy,
   on the held-out evaluation seeds with resampled demand (``NET/eval``). Where
   several learners were trained, the one reported is the one with the lowest delay
   on the tuning seed its checkpoints were selected on, never on the evaluation seeds.

``benchmark.json`` in the folder records each finished stage (its wall time, and for
training the episodes), so ``--resume`` skips what is done and the leaderboard
(:mod:`experiments.leaderboard`) reports the wall time of the whole.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from experiments import layout, results
from experiments.options import BadInput, demand_option, simulation_options
from networks import Scenario

__all__ = ["SUITES", "Benchmark", "BenchmarkError", "Stage", "plan_benchmark", "run_benchmark"]

SUITES: dict[str, tuple[str, ...]] = {
    "resco": ("cologne1", "cologne3", "cologne8", "ingolstadt1", "ingolstadt7",
              "ingolstadt21", "grid4x4", "arterial4x4"),
}
"""The networks of each suite: ``resco`` is RESCO's eight (Ault and Sharon 2021)."""
SMOKE_NETWORKS = ("cologne1", "grid-2x2")
"""``--smoke``: a RESCO network and a generated grid, on short horizons."""
SMOKE_HORIZON_S = 600
TUNED = ("webster", "actuated", "max-pressure")
"""The baselines searched (``tune``) before evaluation."""
UNTUNED = ("fixed", "coordinated", "actuated", "max-pressure", "sotl")
"""The baselines evaluated with their defaults (fixed timing first: the reference)."""
LEARNERS = ("dqn", "ppo")
STATE_FILE = "benchmark.json"
CALIBRATION_EPISODES = 2
"""Episodes of the calibration run that times one training episode."""
TUNING_SEEDS = 2
"""Seeds (10000 on) a baseline's trials and a learner's checkpoints are scored on (one
under ``--smoke``)."""
EVALUATION_SEEDS = 20
"""Held-out seeds each controller is evaluated on. On ingolstadt21 every controller
gridlocks on some draws of traffic and not on others (per-seed delays from 66 s to 480 s
for one policy), and over five seeds the 95% intervals were wider than any gap between
controllers; twenty narrow them about 2.6-fold at the same spread (half the standard
error, and a t quantile of 2.09 instead of 2.78)."""
EPISODE_BOUNDS = (10, 400)
"""The fewest and the most episodes the budget may give a learner."""
SMOKE_EPISODES = (2, 4)
"""The same under ``--smoke``, where the search is one trial: the defaults."""


class BenchmarkError(ValueError):
    """A benchmark folder that cannot be resumed or written."""


@dataclass(frozen=True)
class Benchmark:
    """What ``greenphase benchmark`` runs, checked."""

    networks: tuple[str, ...]
    folder: Path
    protocol: str = "greenphase"
    budget_min: float = 30.0
    """Wall budget of each learner on each network, in minutes."""
    seeds: int = EVALUATION_SEEDS
    """Held-out evaluation seeds 0..N-1."""
    trials: int = 12
    """Trials of each baseline's search."""
    learners: tuple[str, ...] = ("dqn",)
    smoke: bool = False
    workers: int | None = None
    backend: str = "local"
    address: str | None = None
    simulations: int = 1
    """Training episodes simulated at once (``plan_benchmark`` takes one per core)."""

    @property
    def tuning_seeds(self) -> int:
        """Tuning seeds per trial of a search and per checkpoint evaluation of a learner."""
        return 1 if self.smoke else TUNING_SEEDS

    @property
    def evaluation_seeds(self) -> list[int]:
        """The held-out seeds every controller is evaluated on (two under ``--smoke``)."""
        return list(range(2 if self.smoke else self.seeds))

    def scenario(self, network: str) -> Scenario:
        """The network's scenario (a short horizon under ``--smoke``)."""
        from experiments.options import scenario_from

        scenario = scenario_from(network, None, None, None, None)
        if self.smoke:
            scenario = replace(scenario, end=scenario.begin + SMOKE_HORIZON_S)
        return scenario


@dataclass
class Stage:
    """One stage of one network: what it is, where its results go, and how to run it."""

    network: str
    name: str
    """``tune-CONTROLLER``, ``LEARNER`` or ``eval``."""
    run: Callable[[], dict[str, Any]] = field(repr=False)
    """Runs the stage; returns what the state file records besides its wall time."""


def plan_benchmark(*, suite: str = "resco", networks: Sequence[str] = (), folder: Path,
                   protocol: str = "greenphase", budget_min: float = 30.0,
                   seeds: int = EVALUATION_SEEDS,
                   trials: int = 12, learners: Sequence[str] = ("dqn",), smoke: bool = False,
                   workers: int | None = None, backend: str = "local",
                   address: str | None = None, resume: bool = False,
                   overwrite: bool = False, simulations: int = 0) -> Benchmark:
    """Check the benchmark's options and claim its folder.

    ``simulations``: training episodes simulated at once; 0, one per core. Results
    depend on the count, so each training stage records it.

    Raises:
        BadInput: An unknown suite, network, learner or protocol, or a count out of range.
        OutputError: The folder holds other results (or a benchmark, without ``resume``).
    """
    if suite not in SUITES:
        raise BadInput(f"--suite: unknown {suite!r}; choose from {', '.join(SUITES)}")
    chosen = tuple(networks) or (SMOKE_NETWORKS if smoke else SUITES[suite])
    unknown = [n for n in learners if n not in LEARNERS]
    if unknown or not learners:
        raise BadInput(f"--learners: unknown {', '.join(unknown) or 'none given'}; "
                       f"choose from {', '.join(LEARNERS)}")
    if not (budget_min > 0 and math.isfinite(budget_min)):
        raise BadInput(f"--budget-min: must be a positive number of minutes, got {budget_min:g}")
    for option, value in (("--seeds", seeds), ("--trials", trials)):
        if value < 1:
            raise BadInput(f"{option}: must be at least 1, got {value}")
    if simulations < 0:
        raise BadInput(f"--simulations: must be 0 (one per core) or more, got {simulations}")
    from experiments.train import default_simulations

    plan = Benchmark(chosen, Path(folder), protocol, budget_min, seeds, trials,
                     tuple(dict.fromkeys(learners)), smoke, workers, backend, address,
                     simulations or default_simulations())
    for network in chosen:
        simulation_options(protocol, network)  # an unknown protocol is one line here
        plan.scenario(network)  # an unknown network too
    layout.claim(plan.folder, "benchmark", resume=resume, overwrite=overwrite)
    results.ensure_writable(plan.folder)
    if overwrite and not resume:
        _clear(plan)
    return plan


def _clear(plan: Benchmark) -> None:
    """Remove what a benchmark writes in its folder (nothing else), to start again."""
    (plan.folder / STATE_FILE).unlink(missing_ok=True)
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.png"):
        (plan.folder / name).unlink(missing_ok=True)
    for network in plan.networks:
        here = plan.folder / network
        written = [f"tune-{c}" for c in TUNED] + [*LEARNERS, "eval"]
        written += [f".{learner}-calibration" for learner in LEARNERS]
        for name in written:
            shutil.rmtree(here / name, ignore_errors=True)
        with contextlib.suppress(OSError):
            here.rmdir()  # only if nothing else is in it


# ------------------------------------------------------------------ the stages
def stages(plan: Benchmark, network: str) -> list[Stage]:
    """The stages of one network, in the order they run."""
    scenario = plan.scenario(network)
    here = plan.folder / network
    out = [Stage(network, f"tune-{c}", _tuning(plan, scenario, c, here / f"tune-{c}"))
           for c in TUNED]
    out += [Stage(network, learner, _training(plan, scenario, learner, here / learner))
            for learner in plan.learners]
    out.append(Stage(network, "eval", _evaluation(plan, scenario, here)))
    return out


def _options(plan: Benchmark, network: str, **explicit: Any) -> Any:
    """The protocol's settings on held-out (or tuning, or training) resampled draws."""
    return simulation_options(plan.protocol, network,
                              demand=demand_option("resample", "resample"), **explicit)


def _executor(plan: Benchmark) -> Any:
    from experiments.executor import make_executor

    return make_executor(plan.backend, plan.workers, plan.address)


def _tuning(plan: Benchmark, scenario: Scenario, controller: str,
            folder: Path) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        from experiments.tune import tune

        executor = _executor(plan)
        found = tune(controller, scenario, folder, trials=1 if plan.smoke else plan.trials,
                     workers=executor.workers, seeds=plan.tuning_seeds,
                     options=_options(plan, scenario.name), executor=executor, overwrite=True)
        return {"params": results.plain(dict(found.tuned.parameters))}
    return run


def _training(plan: Benchmark, scenario: Scenario, learner: str,
              folder: Path) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        from experiments.train import train
        from experiments.workflows import resumed_spec

        facts: dict[str, Any] = {"learner": learner}
        if (folder / "checkpoints" / "last.pt").is_file():  # interrupted: go on exactly
            spec = resumed_spec(folder)
            done = train(spec, scenario, folder, resume=True)
        else:
            shutil.rmtree(folder, ignore_errors=True)  # it never saved a checkpoint
            per_episode = _seconds_per_episode(plan, scenario, learner, folder)
            low, high = SMOKE_EPISODES if plan.smoke else EPISODE_BOUNDS
            planned = int(min(high, max(low, plan.budget_min * 60 // per_episode)))
            facts["calibration_s_per_episode"] = round(per_episode, 2)
            facts["schedule_episodes"] = planned
            spec = _train_spec(plan, scenario, learner, high).replace(
                schedule_episodes=planned, budget_s=plan.budget_min * 60)
            done = train(spec, scenario, folder)
        return {**facts, "episodes": done.episodes, "train_wall_s": round(done.wall_s, 1),
                "tuning_delay_s": round(done.best_eval_delay_s, 3),
                "simulations": spec.simulation_count, "tuning_seeds": len(spec.evaluation_seeds)}
    return run


def _seconds_per_episode(plan: Benchmark, scenario: Scenario, learner: str,
                         folder: Path) -> float:
    """Wall seconds of one training episode, its share of checkpoint evaluations included."""
    from experiments.train import train

    n = plan.simulations
    spec = _train_spec(plan, scenario, learner, max(CALIBRATION_EPISODES, n))
    calibration = folder.with_name(f".{folder.name}-calibration")
    shutil.rmtree(calibration, ignore_errors=True)
    try:
        timed = train(spec.model_copy(update={"eval_every": spec.episodes}),
                      scenario, calibration, reference=False)
    finally:
        shutil.rmtree(calibration, ignore_errors=True)
    # rounds of n episodes at once: the calibration's training rounds and one evaluation;
    # the run's episodes take a round per n and an evaluation per eval_every
    evaluation_rounds = -(-len(spec.evaluation_seeds) // n)
    per_round = timed.wall_s / (-(-timed.episodes // n) + evaluation_rounds)
    return per_round / n + per_round * evaluation_rounds / spec.eval_every


def _train_spec(plan: Benchmark, scenario: Scenario, learner: str, episodes: int) -> Any:
    from experiments.train import TrainSpec

    return TrainSpec(algo=learner, episodes=episodes,
                     eval_every=1 if plan.smoke else 5, eval_seeds=plan.tuning_seeds,
                     simulations=plan.simulations, simulation=_options(plan, scenario.name))


def _evaluation(plan: Benchmark, scenario: Scenario,
                here: Path) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        from experiments.compare import compare

        learned = best_learner(plan, scenario.name)
        tuned = [f"tuned:{here / f'tune-{c}'}" for c in TUNED]
        controllers = [*UNTUNED, *tuned, f"trained:{here / learned}"]
        options = _options(plan, scenario.name,
                           decision_interval=_trained_interval(here / learned))
        compare(scenario, controllers, plan.evaluation_seeds, options, folder=here / "eval",
                executor=_executor(plan), overwrite=True)
        return {"learner": learned}
    return run


def _trained_interval(run: Path) -> float:
    from agents.policy import policy_options
    from agents.trained import load_policy

    _, policy = load_policy(run)
    return float(policy_options(policy).decision_interval)


def best_learner(plan: Benchmark, network: str) -> str:
    """The learner with the lowest delay on its checkpoint-selection (tuning) seed."""
    state = read_state(plan.folder).get(network, {})
    scores = {n: state.get(n, {}).get("tuning_delay_s", math.inf) for n in plan.learners}
    return min(plan.learners, key=lambda n: (scores[n], plan.learners.index(n)))


# ------------------------------------------------------------------ state and running
def read_state(folder: Path) -> dict[str, dict[str, Any]]:
    """Finished stages by network and stage name (``benchmark.json``)."""
    path = folder / STATE_FILE
    if not path.exists():
        return {}
    state = results.read_json(path)
    if not isinstance(state, dict) or not isinstance(state.get("stages", {}), dict):
        raise results.DamagedFileError({path: "not a benchmark's record"},
                                       "remove it to run every stage again with --resume")
    return {str(k): dict(v) for k, v in state.get("stages", {}).items()}


def _record(plan: Benchmark, stage: Stage, facts: dict[str, Any]) -> None:
    state = read_state(plan.folder)
    state.setdefault(stage.network, {})[stage.name] = facts
    doc = {"networks": list(plan.networks), "protocol": plan.protocol,
           "budget_min": plan.budget_min, "seeds": plan.seeds, "trials": plan.trials,
           "learners": list(plan.learners), "smoke": plan.smoke, "stages": state}
    results.write_json(plan.folder / STATE_FILE, doc)


def check_resumable(plan: Benchmark) -> None:
    """Refuse to resume a benchmark folder with other settings than the ones given."""
    path = plan.folder / STATE_FILE
    if not path.exists():
        return
    doc = results.read_json(path)
    for key in ("protocol", "budget_min", "seeds", "trials", "smoke"):
        if key in doc and doc[key] != getattr(plan, key):
            raise BenchmarkError(f"{plan.folder} holds a benchmark with {key} {doc[key]!r}, "
                                 f"not {getattr(plan, key)!r}; give the same settings, or "
                                 f"another --out")


def run_benchmark(plan: Benchmark,
                  on_stage: Callable[[Stage, str], None] | None = None) -> dict[str, Any]:
    """Run every stage not yet finished, network by network; write the leaderboard.

    The leaderboard is written again after each network's evaluation, so a run that
    is interrupted (or still running) shows the networks it has finished.
    ``on_stage`` is called with each stage and ``"start"``, ``"done"`` or ``"skip"``.
    """
    from experiments.leaderboard import write_leaderboard

    check_resumable(plan)
    for network in plan.networks:
        for stage in stages(plan, network):
            if stage.name in read_state(plan.folder).get(network, {}):
                if on_stage is not None:
                    on_stage(stage, "skip")
                continue
            if on_stage is not None:
                on_stage(stage, "start")
            started = time.perf_counter()
            facts = stage.run()
            facts["wall_s"] = round(time.perf_counter() - started, 1)
            _record(plan, stage, facts)
            if stage.name == "eval":
                write_leaderboard(plan, read_state(plan.folder))
            if on_stage is not None:
                on_stage(stage, "done")
    return write_leaderboard(plan, read_state(plan.folder))

