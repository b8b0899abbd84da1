"""An optimizer study: DQN trained with eight optimisation settings over seeds, side by side.

The settings are the optimizers ``sgd``, ``momentum``, ``nesterov`` and ``adam``, each with a
``constant`` and a ``cosine`` learning-rate schedule (:data:`SETTINGS`). Every other training
setting is :class:`~experiments.train.TrainSpec`'s default (or a ``base`` spec's), except that
every episode ends with a greedy evaluation on :attr:`TrainSpec.eval_seed` (``eval_every=1``).
Each setting is trained with learner seeds ``0..seeds-1``: the study is a sweep over
``training.optim`` run through the one pipeline on a pool of worker processes (libsumo
runs one simulation per process), one training run directory per setting and seed.

The target is max-pressure's mean delay on the same evaluation seed: the study reports how
many episodes each setting needs to reach it, its final and best evaluation delays, and its
training wall time.

Learning rates. Adam uses its usual ``1e-3``. The SGD family shares one learning rate, so
that ``sgd``, ``momentum`` and ``nesterov`` differ by momentum only (0.9, the
:class:`~agents.optim.OptimConfig` default). It was chosen by a quick measurement on
``cologne1`` (DQN with the default spec, learner seed 0, 15 episodes, constant schedule, a
greedy evaluation after every episode on the evaluation seed, where max-pressure's delay is
38.1 s); delays in seconds:

=========  =====  =====  =====  ===========  =====================
optimizer  lr     best   final  last-5 mean  first episode <= 38.1
=========  =====  =====  =====  ===========  =====================
sgd        1e-3   51.7   51.7   319.0        never
sgd        1e-2   22.3   24.2   24.4         7
sgd        3e-2   21.1   24.6   23.5         6
momentum   1e-3   23.3   24.1   24.3         7
momentum   1e-2   20.6   21.7   22.8         5
momentum   3e-2   21.7   25.3   23.8         4
=========  =====  =====  =====  ===========  =====================

``1e-3`` is too slow for plain SGD (its greedy evaluations stay at about 940 s of delay
for ten episodes). ``1e-2`` and ``3e-2`` tie on the last-5 mean averaged over the two
optimizers (23.6 s each); ``3e-2`` reaches max-pressure one episode sooner, ``1e-2`` ends
lower (24.2 and 21.7 s against 24.6 and 25.3 s) and is steadier with momentum, whose
effective step is ten times ``lr``. The study uses ``1e-2`` (:data:`SGD_LR`). One seed over
15 episodes separates these rates by less than the noise, so treat the choice as "a rate
that works for all three", not as tuned.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from agents.optim import ConfigError
from experiments import layout, results
from experiments.compare import experiment_of
from experiments.executor import PoolExecutor
from experiments.results import plain
from experiments.spec import Sweep
from experiments.stats import mean_ci95
from experiments.sweep import execute
from experiments.train import TrainSpec
from experiments.units import RunUnit
from networks import Scenario

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
"""The optimizers compared, in table order."""
SCHEDULES = ("constant", "cosine")
"""The learning-rate schedules compared."""
SGD_LR = 1e-2
"""Learning rate of ``sgd``, ``momentum`` and ``nesterov`` (measured: see the module doc)."""
LEARNING_RATES = {"sgd": SGD_LR, "momentum": SGD_LR, "nesterov": SGD_LR, "adam": 1e-3}
"""Learning rate per optimizer."""
REFERENCE = "max-pressure"
"""The controller whose evaluation delay the settings race to reach."""

STUDY_COLUMNS = ["setting", "optimizer", "schedule", "lr", "seed", "episode", "eval_delay_s",
                 "wall_s"]
"""``study.csv``; ``episode`` counts from 0 and ``wall_s`` is the run's training time so far."""
SUMMARY_COLUMNS = [
    "setting", "optimizer", "schedule", "lr", "seeds", "final_delay_s", "final_ci95_s",
    "best_delay_s", "best_ci95_s", "reached", "episodes_to_reference", "reach", "wall_s",
    "error",
]
"""``summary.csv`` (see :func:`summarise`)."""
COLOURS = {"sgd": "#1565c0", "momentum": "#ef6c00", "nesterov": "#2e7d32", "adam": "#c62828"}


@dataclass(frozen=True)
class Setting:
    """One optimisation setting of the study."""

    optimizer: str
    schedule: str
    lr: float

    @property
    def name(self) -> str:
        """``<optimizer>-<schedule>``, e.g. ``nesterov-cosine``."""
        return f"{self.optimizer}-{self.schedule}"


SETTINGS = tuple(Setting(o, s, LEARNING_RATES[o]) for o in OPTIMIZERS for s in SCHEDULES)
"""The eight settings: every optimizer with every schedule."""


@dataclass(frozen=True)
class RunOutcome:
    """One training run of the study, as its worker reported it."""

    setting: Setting
    seed: int
    episodes: list[dict[str, float]]
    """``episode``, ``eval_delay_s`` and ``wall_s`` (cumulative) of each finished episode."""
    wall_s: float
    error: str = ""
    """Why the run failed or stopped early (divergence), or empty."""

    @property
    def finished(self) -> bool:
        """Whether every episode ran."""
        return not self.error


@dataclass(frozen=True)
class StudyResult:
    """A finished study (everything it wrote to its folder)."""

    network: str
    folder: Path
    reference_delay_s: float
    """Max-pressure's mean delay on the evaluation seed (NaN if that run failed)."""
    runs: pd.DataFrame
    """``study.csv``: one row per setting, seed and episode."""
    summary: pd.DataFrame
    """``summary.csv``: one row per setting."""
    reference_error: str = ""

    def to_json(self) -> dict[str, Any]:
        """``{network, reference_delay_s, settings: [summary rows]}``; NaN becomes ``null``."""
        doc: dict[str, Any] = {
            "network": self.network,
            "reference": REFERENCE,
            "reference_delay_s": plain(self.reference_delay_s),
            "settings": [{k: plain(v) for k, v in row.items()}
                         for row in self.summary.to_dict("records")],
            "folder": str(self.folder),
        }
        if self.reference_error:
            doc["reference_error"] = self.reference_error
        return doc


def run_spec(base: TrainSpec, setting: Setting, seed: int, episodes: int) -> TrainSpec:
    """The training spec of one run: ``base`` as DQN with the setting's optimisation."""
    optim = base.optim.replace(optimizer=setting.optimizer, schedule=setting.schedule,
                               lr=setting.lr)
    return base.replace(algo="dqn", episodes=episodes, seed=seed, eval_every=1, optim=optim)


# ------------------------------------------------------------------ the study
def plan_of(scenario: Scenario, base: TrainSpec, settings: Sequence[Setting], seeds: int,
            episodes: int, name: str = "study") -> tuple[Sweep, list[RunUnit]]:
    """The study as a sweep over ``training.optim``, and its runs: the reference first.

    The reference is max-pressure on the evaluation seed with the training's signal
    timing; then DQN for every setting and learner seed (the sweep's fixed-time runs,
    which every sweep adds, are left out).
    """
    training = run_spec(base, settings[0], 0, episodes)
    axis = tuple({"optimizer": s.optimizer, "schedule": s.schedule, "lr": s.lr}
                 for s in settings)
    experiment = experiment_of(scenario, ["dqn"], range(seeds), training.simulation,
                               name=name, training=training)
    plan = Sweep(experiment, grid=(("training.optim", axis),))
    timing = training.simulation.model_copy(update={"faults": "", "cleaning": "none"})
    reference = experiment_of(scenario, [REFERENCE], [training.eval_seed], timing,
                              name=name, trips=False).resolved()
    units = [RunUnit(reference, REFERENCE, training.eval_seed),
             *(u for u in plan.units if u.learned)]
    return plan, units


def _setting_of(unit: RunUnit, settings: Sequence[Setting]) -> Setting:
    optim = dict(unit.point)["training.optim"]
    return next(s for s in settings if (s.optimizer, s.schedule, s.lr)
                == (optim["optimizer"], optim["schedule"], optim["lr"]))


def _outcome(folder: Path, unit: RunUnit, row: dict[str, Any],
             settings: Sequence[Setting]) -> RunOutcome:
    """A training run's outcome: its episodes (from its curves, stopped or not) and error."""
    curves = folder / "training" / unit.hash / "curves.csv"
    episodes: list[dict[str, float]] = []
    error = row["error"] if row["status"] == "failed" else ""
    if curves.is_file():
        try:
            data = pd.read_csv(curves)
            rows = data[data["kind"] == "episode"]
            episodes = rows[["episode", "eval_delay_s", "wall_s"]].to_dict("records")
        except Exception as err:  # noqa: BLE001 - an unreadable curve is the run's error
            error = error or f"cannot read {curves}: {type(err).__name__}: {err}"
    return RunOutcome(_setting_of(unit, settings), unit.seed, episodes, float(row["wall_s"]),
                      error)


def study(
    scenario: Scenario,
    folder: Path,
    *,
    seeds: int = 3,
    episodes: int = 25,
    workers: int = 2,
    base: TrainSpec | None = None,
    settings: Sequence[Setting] = SETTINGS,
    on_run: Callable[[RunOutcome], None] | None = None,
) -> StudyResult:
    """Train every setting with learner seeds ``0..seeds-1`` into ``folder`` and summarise.

    The runs go through the one pipeline (:func:`experiments.sweep.execute`) on a pool of
    ``workers`` processes; a study already in ``folder`` is replaced.

    Args:
        scenario: The network and demand to train and evaluate on.
        folder: The study folder; training runs go to ``training/<hash>/`` inside it.
        seeds: Learner seeds per setting.
        episodes: Training episodes per run.
        workers: Worker processes (each runs one simulation at a time).
        base: Training settings other than the optimisation ones (default
            :class:`TrainSpec`'s); its algorithm, episodes, seed and ``eval_every`` are
            replaced.
        settings: The optimisation settings to compare.
        on_run: Called in this process as each training run finishes.

    Returns:
        The runs and summary, also written to ``study.csv``, ``summary.csv``,
        ``plots/learning_curves.png``, ``manifest.json``, ``spec.toml`` and ``log.txt``.

    Raises:
        ConfigError: A count is below 1, or a setting is invalid.
        experiments.results.OutputError: ``folder`` cannot be written.
    """
    for name, value in (("seeds", seeds), ("episodes", episodes), ("workers", workers)):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    if not settings:
        raise ConfigError("no settings to study")
    base = base or TrainSpec()
    folder = Path(folder)
    plan, units = plan_of(scenario, base, settings, seeds, episodes,
                          name=folder.resolve().name or "study")
    outcomes: dict[str, RunOutcome] = {}
    reference, reference_error = math.nan, ""

    def on_result(unit: RunUnit, row: dict[str, Any], retry: bool) -> None:
        nonlocal reference, reference_error
        if retry:
            return
        if not unit.learned:
            ok = row["status"] == "ok"
            reference, reference_error = (row["mean_delay_s"], "") if ok else (
                math.nan, row["error"])
            return
        outcomes[unit.hash] = _outcome(folder, unit, row, settings)
        if on_run is not None:
            on_run(outcomes[unit.hash])

    manifest = {"reference": REFERENCE, "settings": [s.name for s in settings],
                "learning_rates": {s.name: s.lr for s in settings}, "episodes": episodes,
                "seeds": seeds, "workers": workers}
    done = execute(plan, folder, executor=PoolExecutor(workers), units=units, retries=1,
                   kind="study", manifest=manifest, on_result=on_result,
                   overwrite=layout.replaces(folder, ("study",)))
    ordered = [outcomes[u.hash] for u in units if u.learned]
    runs = study_frame(ordered)
    summary = summarise(ordered, settings, seeds, reference)
    results.atomic_write(folder / "study.csv", lambda tmp: runs.to_csv(tmp, index=False))
    results.atomic_write(folder / "summary.csv", lambda tmp: summary.to_csv(tmp, index=False))
    plot_learning_curves(runs, settings, reference, folder / "plots" / "learning_curves.png",
                         title=f"{scenario.name}: DQN evaluation delay, mean over {seeds} seed(s)")
    failed = sum(1 for o in ordered if not o.finished)
    log = (f"greenphase study: {len(ordered)} runs ({failed} failed or stopped) in "
           f"{done.wall_s:.1f} s on {workers} worker(s); {REFERENCE} delay {reference:.2f} s\n")
    if reference_error:
        log += f"{REFERENCE} reference failed: {reference_error}\n"
    for o in ordered:
        if o.error:
            log += f"{o.setting.name} seed {o.seed}: {o.error}\n"
    results.write_text(folder / "log.txt", log)
    return StudyResult(scenario.name, folder, reference, runs, summary, reference_error)


# ------------------------------------------------------------------ tables and plots
def study_frame(outcomes: Sequence[RunOutcome]) -> pd.DataFrame:
    """``study.csv``: one row per setting, seed and finished episode."""
    rows = [
        {"setting": o.setting.name, "optimizer": o.setting.optimizer,
         "schedule": o.setting.schedule, "lr": o.setting.lr, "seed": o.seed,
         "episode": int(e["episode"]), "eval_delay_s": float(e["eval_delay_s"]),
         "wall_s": float(e["wall_s"])}
        for o in outcomes for e in o.episodes
    ]
    return pd.DataFrame(rows, columns=STUDY_COLUMNS)


def episodes_to_reach(delays: Sequence[float], reference: float) -> int | None:
    """Episodes trained (index + 1) until the evaluation delay is first ``<= reference``."""
    for i, delay in enumerate(delays):
        if delay <= reference:  # NaN never counts
            return i + 1
    return None


def reach_label(reached: int, seeds: int, mean_episodes: float) -> str:
    """E.g. ``"3/3 seeds, 7.0"``, ``"1/3 seeds, 12.0"`` or ``"never"``."""
    if reached == 0:
        return "never"
    return f"{reached}/{seeds} seeds, {mean_episodes:.1f}"


def summarise(
    outcomes: Sequence[RunOutcome], settings: Sequence[Setting], seeds: int, reference: float
) -> pd.DataFrame:
    """``summary.csv``: one row per setting.

    ``final_delay_s``: the last episode's evaluation delay, mean and 95% CI over the runs that
    finished (``seeds``); ``best_delay_s``: each run's lowest evaluation delay, mean and CI over
    runs with any episode; ``reached``: runs whose evaluation delay got to ``reference``, and
    ``episodes_to_reference`` the mean episodes they needed (runs that never got there are not
    averaged in: ``reach`` says how many did); ``wall_s``: mean training time of a run;
    ``error``: what went wrong in failed or stopped runs.
    """
    rows = []
    for setting in settings:
        mine = [o for o in outcomes if o.setting == setting]
        finished = [o for o in mine if o.finished and o.episodes]
        curves = [[float(e["eval_delay_s"]) for e in o.episodes] for o in mine if o.episodes]
        finals = [o.episodes[-1]["eval_delay_s"] for o in finished]
        finals = [float(v) for v in finals if not math.isnan(float(v))]
        bests = [min((d for d in c if not math.isnan(d)), default=math.nan) for c in curves]
        bests = [b for b in bests if not math.isnan(b)]
        reach = [n for n in (episodes_to_reach(c, reference) for c in curves) if n is not None]
        final, final_ci = mean_ci95(finals) if finals else (math.nan, math.nan)
        best, best_ci = mean_ci95(bests) if bests else (math.nan, math.nan)
        to_ref = sum(reach) / len(reach) if reach else math.nan
        walls = [o.episodes[-1]["wall_s"] for o in finished]
        rows.append({
            "setting": setting.name, "optimizer": setting.optimizer,
            "schedule": setting.schedule, "lr": setting.lr, "seeds": len(finished),
            "final_delay_s": final, "final_ci95_s": final_ci,
            "best_delay_s": best, "best_ci95_s": best_ci,
            "reached": len(reach), "episodes_to_reference": to_ref,
            "reach": reach_label(len(reach), seeds, to_ref),
            "wall_s": sum(walls) / len(walls) if walls else math.nan,
            "error": "; ".join(f"seed {o.seed}: {o.error}" for o in mine if o.error),
        })
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def plot_learning_curves(
    runs: pd.DataFrame, settings: Sequence[Setting], reference: float, path: Path, *, title: str
) -> Path:
    """Mean evaluation delay per setting against episodes, with the reference as a line."""
    plt = results.pyplot()
    fig, ax = plt.subplots(figsize=(8.0, 5.0), dpi=120)
    for setting in settings:
        mine = runs[runs["setting"] == setting.name]
        if mine.empty:
            continue
        mean = mine.groupby("episode")["eval_delay_s"].mean()
        ax.plot(mean.index + 1, mean.to_numpy(), label=f"{setting.name} (lr {setting.lr:g})",
                color=COLOURS.get(setting.optimizer, "#616161"),
                linestyle="-" if setting.schedule == "constant" else "--")
    if not math.isnan(reference):
        ax.axhline(reference, color="black", linewidth=1.0, linestyle=":",
                   label=f"{REFERENCE} ({reference:.1f} s)")
    ax.set_yscale("log")
    ax.set_xlabel("episode")
    ax.set_ylabel("evaluation mean delay (s, log scale)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small", ncol=2)
    return results.save_figure(fig, path)


def to_json_text(result: StudyResult) -> str:
    """The study as one JSON document (strict JSON: no NaN)."""
    return json.dumps(result.to_json(), allow_nan=False)


def summary_table(result: StudyResult, title: str) -> Any:
    """The summary as a rich table: one row per setting."""
    from rich.table import Table

    table = Table(title=title)
    has_errors = bool(result.summary["error"].astype(bool).any())
    columns = ["setting", "lr", "seeds", "final delay s", "best delay s",
               f"episodes to {REFERENCE}", "wall s / run"] + (["error"] if has_errors else [])
    for col in columns:
        table.add_column(col, justify="left" if col in ("setting", "error") else "right")

    def fmt(mean: float, ci: float) -> str:
        return "—" if math.isnan(mean) else f"{mean:.1f} ± {ci:.1f}"

    for row in result.summary.to_dict("records"):
        cells = [
            row["setting"], f"{row['lr']:g}", str(row["seeds"]),
            fmt(row["final_delay_s"], row["final_ci95_s"]),
            fmt(row["best_delay_s"], row["best_ci95_s"]),
            "no reference" if math.isnan(result.reference_delay_s) else row["reach"],
            "—" if math.isnan(row["wall_s"]) else f"{row['wall_s']:.0f}",
        ]
        table.add_row(*cells, *([row["error"]] if has_errors else []))
    return table
