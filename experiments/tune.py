"""Tuning a classic controller's parameters on tuning demand: ``greenphase tune``.

An Optuna study (TPE, seeded) searches the controller's parameter space (:data:`SPACES`);
a trial's value is the mean delay over the tuning seeds (:data:`TUNING_SEED_FLOOR` on,
never an evaluation seed). The first trial is the controller's defaults (clamped into the
space), so the search starts from what an untuned run gets. Where a default is not a point
of the space (actuated control's green bounds default to the network program's own), the
exact defaults are measured too, as the candidate numbered -1, and kept when no trial beats
them: a tuned controller is never worse than the untuned one on the tuning seeds. Trials
run in batches of one per worker: a batch is asked, its runs (each trial a ``tuned:``
folder of its own, as the results are used later) go through an executor, and its values
are told back.

The results folder holds ``params.toml`` (the best parameters: ``tuned:DIR`` reads it),
``trials.parquet`` (one row per trial) and ``plots/search.png``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from agents.errors import UnknownControllerError
from agents.tuned import PARAMS_FILE, Tuned, build, tunable
from experiments import results
from experiments.executor import Executor, InProcessExecutor, Outcome, SweepError
from experiments.options import BadInput
from experiments.units import RunUnit
from networks import Scenario, scratch
from simulator.options import SimulationOptions

if TYPE_CHECKING:
    import optuna

__all__ = ["OBJECTIVE", "SPACES", "TUNING_SEED_FLOOR", "TuneResult", "plot_search",
           "tuning_seeds", "tune"]

TUNING_SEED_FLOOR = 10_000
"""The first tuning seed: evaluation uses seeds 0..N-1 and training 100000 on."""
OBJECTIVE = "mean_delay_s"
"""What a trial minimises: the mean over the tuning seeds of the runs' mean delay."""


@dataclass(frozen=True)
class Dim:
    """One parameter's range: ``step`` for an evenly spaced grid, ``log`` for a log scale."""

    low: float
    high: float
    step: float | None = None
    log: bool = False
    integer: bool = False
    unset: float | None = None
    """The value the defaults trial takes where the default is None (e.g. the network's
    own green bounds): the usual value."""


SPACES: dict[str, dict[str, Dim]] = {
    "max-pressure": {"min_hold": Dim(5.0, 40.0, 1.0)},
    "sotl": {"theta": Dim(10.0, 1000.0, log=True), "mu": Dim(0, 10, integer=True),
             "phi_min": Dim(5.0, 40.0, 1.0)},
    "actuated": {"max_gap": Dim(1.0, 6.0, 0.1), "detector_gap": Dim(0.5, 4.0, 0.1),
                 "passing_time": Dim(0.5, 4.0, 0.1), "min_dur": Dim(3.0, 15.0, 1.0, unset=5.0),
                 "max_dur": Dim(20.0, 90.0, 1.0, unset=50.0)},
    "webster": {"min_cycle": Dim(20.0, 60.0, 5.0), "max_cycle": Dim(60.0, 180.0, 5.0),
                "startup_lost_time": Dim(0.0, 5.0, 0.5),
                "saturation_flow": Dim(1400.0, 2200.0, 50.0)},
    "coordinated": {"min_cycle": Dim(20.0, 60.0, 5.0), "max_cycle": Dim(60.0, 180.0, 5.0),
                    "startup_lost_time": Dim(0.0, 5.0, 0.5),
                    "speed_factor": Dim(0.5, 1.0, 0.05)},
}
"""The parameters a search varies, by controller; the others keep their defaults."""


@dataclass(frozen=True)
class TuneResult:
    """A finished search."""

    tuned: Tuned
    """The best parameters and what they were found on (``params.toml``)."""
    trials: pd.DataFrame
    """One row per trial: number, parameters, value, state, wall time."""
    folder: Path
    wall_s: float


def tuning_seeds(count: int) -> list[int]:
    """The SUMO (and demand) seeds a search runs on: ``count`` of them from 10000."""
    return list(range(TUNING_SEED_FLOOR, TUNING_SEED_FLOOR + count))


def _distributions(space: Mapping[str, Dim]) -> dict[str, Any]:
    from optuna.distributions import FloatDistribution, IntDistribution

    return {name: (IntDistribution(int(d.low), int(d.high)) if d.integer
                   else FloatDistribution(d.low, d.high, step=d.step, log=d.log))
            for name, d in space.items()}


def _defaults(controller: str, space: Mapping[str, Dim]) -> dict[str, Any]:
    """The controller's default parameters, clamped into the space (None: ``Dim.unset``)."""
    defaults = tunable()[controller]().model_dump()
    start: dict[str, Any] = {}
    for name, d in space.items():
        value = next((v for v in (defaults.get(name), d.unset) if v is not None), d.low)
        value = min(max(value, d.low), d.high)
        if d.step is not None:  # onto the grid, as the distribution holds only its points
            value = d.low + round((value - d.low) / d.step) * d.step
        start[name] = int(value) if d.integer else float(value)
    return start


DEFAULTS = -1
"""The number of the exact-defaults candidate (see the module's docstring)."""


def exact_defaults(controller: str, space: Mapping[str, Dim]) -> dict[str, Any] | None:
    """The controller's own defaults of the space's parameters, where the first trial is not them.

    None where the first trial is them. Defaults of None are left out, so that they stay None.
    """
    defaults = tunable()[controller]().model_dump()
    own = {name: defaults.get(name) for name in space}
    if own == _defaults(controller, space):
        return None
    return {name: value for name, value in own.items() if value is not None}


def check(controller: str, *, trials: int, workers: int, seeds: int,
          timeout: float | None) -> None:
    """Refuse a controller without a search space and counts below one.

    Raises:
        UnknownControllerError: A controller that cannot be tuned.
        BadInput: A count below one or a timeout not above zero.
    """
    if controller not in SPACES:
        raise UnknownControllerError(f"cannot tune {controller!r}; tunable: {', '.join(SPACES)}")
    for option, value in (("--trials", trials), ("--workers", workers), ("--seeds", seeds)):
        if value < 1:
            raise BadInput(f"{option}: must be at least 1, got {value}")
    if timeout is not None and not timeout > 0:
        raise BadInput(f"--timeout: must be > 0, got {timeout:g}")


def prepare_folder(folder: Path, *, overwrite: bool) -> None:
    """Refuse a folder that holds anything unless ``overwrite``; check it is writable.

    Raises:
        experiments.results.OutputError: The folder holds files, or cannot be written.
    """
    folder = Path(folder)
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise results.OutputError(f"{folder} is not empty: give tune a folder of its own "
                                  "(--out) or --overwrite to replace its results")
    results.ensure_writable(folder)


class _Runs:
    """The trials' runs, and what came back.

    Runs are deterministic, so a trial with the parameters of an earlier one (TPE repeats
    points of a small grid) takes the earlier one's value instead of running again.
    """

    def __init__(self, scenario: Scenario, controller: str, options: SimulationOptions,
                 seeds: Sequence[int], where: Path) -> None:
        self.scenario, self.controller, self.options = scenario, controller, options
        self.seeds, self.where = list(seeds), where
        self.outcomes: dict[tuple[str, int], Outcome] = {}
        self.first: dict[tuple[tuple[str, Any], ...], int] = {}
        """The trial that first had these parameters."""

    def measure(self, executor: Executor, trials: Sequence[optuna.Trial],
                demand: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Run the trials that are new; each trial's value, wall time, error, repeated trial."""
        fresh: list[optuna.Trial] = []
        for trial in trials:
            if _key(trial) not in self.first:
                self.first[_key(trial)] = trial.number
                fresh.append(trial)
        units = self.units([t.number for t in fresh], [_round(t.params) for t in fresh], demand)
        executor.run(units, self.where, self.record)
        measured = []
        for trial in trials:
            first = self.first[_key(trial)]
            value, wall, error = self.value(first)
            repeat = first != trial.number
            measured.append({"value": value, "wall_s": 0.0 if repeat else wall, "error": error,
                             "repeat_of": first if repeat else -1})
        return measured

    def units(self, numbers: Sequence[int], params: Sequence[Mapping[str, Any]],
              demand: Mapping[str, Any]) -> list[RunUnit]:
        """Write each trial's ``tuned:`` folder; one run per trial and seed."""
        from experiments.compare import experiment_of

        if not numbers:
            return []
        names = []
        for number, values in zip(numbers, params, strict=True):
            folder = self.folder(number)
            doc = Tuned(self.controller, self.scenario.name, dict(values), dict(demand))
            results.write_toml(folder / PARAMS_FILE, doc.to_dict())
            names.append(f"tuned:{folder}")
        experiment = experiment_of(self.scenario, names, self.seeds, self.options,
                                   name="tune", trips=False)
        return [RunUnit(experiment, name, seed) for name in names for seed in self.seeds]

    def folder(self, number: int) -> Path:
        """The ``tuned:`` folder of trial ``number`` (:data:`DEFAULTS`: the exact defaults)."""
        return self.where / ("defaults" if number == DEFAULTS else f"trial-{number:04d}")

    def measure_defaults(self, executor: Executor, params: Mapping[str, Any],
                         demand: Mapping[str, Any]) -> dict[str, Any]:
        """The exact defaults' row (number :data:`DEFAULTS`)."""
        executor.run(self.units([DEFAULTS], [params], demand), self.where, self.record)
        value, wall, error = self.value(DEFAULTS)
        return {"number": DEFAULTS, **_round(params),
                "value": math.nan if value is None else value,
                "state": "complete" if value is not None else "fail", "wall_s": wall,
                "repeat_of": -1, "error": error}

    def record(self, unit: RunUnit, out: Outcome) -> bool:
        """Keep an attempt's outcome; a failed run is not tried again."""
        self.outcomes[(unit.controller, unit.seed)] = out
        return False

    def value(self, number: int) -> tuple[float | None, float, str]:
        """A trial's mean delay over the seeds (None if a run failed), wall time, error."""
        name = f"tuned:{self.folder(number)}"
        outs = [self.outcomes.get((name, s)) for s in self.seeds]
        wall = sum(o.wall_s for o in outs if o is not None and not math.isnan(o.wall_s))
        failed = [o for o in outs if o is None or o.status != "ok"]
        if failed:
            return None, wall, failed[0].error if failed[0] is not None else "no result"
        return sum(o.kpis[OBJECTIVE] for o in outs if o is not None) / len(outs), wall, ""


def demand_record(options: SimulationOptions, seeds: Sequence[int]) -> dict[str, Any]:
    """The demand a search ran on: its mode, scale and seeds."""
    return {**results.plain(options.demand), "seeds": list(seeds)}


def _as_run(scenario: Scenario, options: SimulationOptions) -> SimulationOptions:
    """The options as a run unit gets them; refused where a setting would be lost.

    Raises:
        BadInput: A demand that the runs would not get.
    """
    from experiments.compare import experiment_of

    ran = experiment_of(scenario, ["fixed"], [0], options, name="tune").options
    if ran.demand != options.demand:
        raise BadInput(f"--demand: the runs cannot take {options.demand} yet (they would "
                       f"run {ran.demand})")
    return ran


def tune(controller: str, scenario: Scenario, folder: Path, *, trials: int = 20,
         timeout: float | None = None, workers: int = 1, seeds: int = 2, seed: int = 0,
         options: SimulationOptions | None = None, executor: Executor | None = None,
         overwrite: bool = False,
         on_trial: Callable[[int, float | None], None] | None = None) -> TuneResult:
    """Search ``controller``'s parameters on ``scenario``; write the results folder.

    Args:
        controller: A classic controller of :data:`SPACES`.
        scenario: The network, its demand and the horizon each run simulates.
        folder: The results folder (refused if it holds anything, unless ``overwrite``).
        trials: Trials at most.
        timeout: Seconds after which no new batch of trials starts (the first always does).
        workers: Trials run at a time (a batch); the executor's workers run their runs.
        seeds: Tuning seeds per trial (:func:`tuning_seeds`).
        seed: The sampler's seed: the same seed gives the same trials.
        options: How the scenario is simulated (its demand settings included).
        executor: Where the runs go (default: a process pool of ``workers``, or this
            process for one worker).
        overwrite: Replace the results in ``folder``.
        on_trial: Called with each finished trial's number and value (None: it failed).

    Raises:
        UnknownControllerError: A controller without a search space.
        BadInput: Counts below one.
        experiments.results.OutputError: The folder holds files or cannot be written.
        SweepError: No trial finished.
    """
    check(controller, trials=trials, workers=workers, seeds=seeds, timeout=timeout)
    prepare_folder(folder, overwrite=overwrite)
    options = options or SimulationOptions()
    if executor is None:
        from experiments.executor import PoolExecutor

        executor = PoolExecutor(workers) if workers > 1 else InProcessExecutor()
    space = SPACES[controller]
    study = _study(seed, trials, workers)
    study.enqueue_trial(_defaults(controller, space))
    dists, seed_list = _distributions(space), tuning_seeds(seeds)
    demand = demand_record(_as_run(scenario, options), seed_list)
    rows: list[dict[str, Any]] = []
    own = exact_defaults(controller, space)
    defaults: dict[str, Any] | None = None
    started = time.perf_counter()
    with scratch.temporary("tune") as tmp:
        runs = _Runs(scenario, controller, options, seed_list, Path(tmp))
        if own is not None:
            defaults = runs.measure_defaults(executor, own, demand)
        while len(rows) < trials and (not rows or timeout is None
                                      or time.perf_counter() - started < timeout):
            asked = [study.ask(dists) for _ in range(min(workers, trials - len(rows)))]
            for trial, measured in zip(asked, runs.measure(executor, asked, demand), strict=True):
                rows.append(_tell(study, trial, measured))
                if on_trial is not None:
                    on_trial(trial.number, rows[-1]["value"])
    return _finish(study, controller, scenario, folder, rows, demand, seed,
                   time.perf_counter() - started, defaults)


def _round(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters without the float noise of a grid (1.9000000000000001 is 1.9)."""
    return {k: float(f"{v:.10g}") if isinstance(v, float) else v for k, v in params.items()}


def _key(trial: optuna.Trial) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(_round(trial.params).items()))


def _study(seed: int, trials: int, workers: int) -> optuna.Study:
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    startup = max(workers, min(10, trials // 3))
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    return optuna.create_study(direction="minimize", sampler=sampler)


def _tell(study: optuna.Study, trial: optuna.Trial, measured: dict[str, Any]) -> dict[str, Any]:
    """Tell the study a trial's value (or its failure); the trial's row."""
    import optuna

    value = measured["value"]
    if value is None:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    else:
        study.tell(trial, value)
    return {"number": trial.number, **_round(trial.params),
            "value": math.nan if value is None else value,
            "state": "complete" if value is not None else "fail", "wall_s": measured["wall_s"],
            "repeat_of": measured["repeat_of"], "error": measured["error"]}


def _finish(study: optuna.Study, controller: str, scenario: Scenario, folder: Path,
            rows: list[dict[str, Any]], demand: dict[str, Any], seed: int,
            wall: float, defaults: dict[str, Any] | None = None) -> TuneResult:
    """Keep the best candidate (the exact defaults on a tie); write the folder."""
    candidates = [*([defaults] if defaults is not None else []), *rows]
    complete = [r for r in candidates if r["state"] == "complete"]
    if not complete:
        raise SweepError(f"no trial finished: {rows[0]['error']}")
    best = min(complete, key=lambda r: (r["value"], r["number"]))
    if best["number"] == DEFAULTS:
        parameters = {k: v for k, v in best.items() if k in SPACES[controller]}
    else:
        parameters = _round(study.trials[best["number"]].params)
    build(controller, parameters)  # the best parameters make a controller
    search = {"objective": OBJECTIVE, "value": best["value"], "trial": best["number"],
              "default_value": candidates[0]["value"], "trials": len(rows), "sampler": "TPE",
              "sampler_seed": seed, "begin_s": scenario.begin, "end_s": scenario.end,
              "wall_s": round(wall, 1)}
    tuned = Tuned(controller, scenario.name, parameters, demand, search)
    frame = pd.DataFrame(candidates)
    results.write_toml(folder / PARAMS_FILE, tuned.to_dict())
    results.write_parquet(folder / "trials.parquet", frame)
    plot_search(frame, folder / "plots" / "search.png", f"tune {controller} on {scenario.name}")
    return TuneResult(tuned, frame, Path(folder), wall)


def plot_search(trials: pd.DataFrame, path: Path, title: str) -> Path:
    """Each trial's value and the best so far."""
    plt = results.pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    ax.plot(trials["number"], trials["value"], "o", color="#888888", label="trial")
    ax.step(trials["number"], trials["value"].cummin(), where="post", color="#2e7d32",
            label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{OBJECTIVE} over tuning seeds")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return results.save_figure(fig, path)
