"""The work behind the commands: check the options, run the experiment, write the results.

Each command of :mod:`experiments.cli` parses its options, calls the functions here,
and renders what they return. A ``plan_*`` function checks everything that can be
checked before a simulation starts (and that the results folder is writable); the
``run_*`` function that follows runs the plan and writes its results folder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from experiments import gates as gate_checks
from experiments import layout, results
from experiments.compare import Comparison, validate_controllers
from experiments.compare import compare as run_compare
from experiments.executor import RunFailed
from experiments.options import (
    RUNS,
    BadInput,
    ScenarioOptions,
    default_folder,
    demand_option,
    federated_settings,
    int_list,
    sensor_options,
    simulation_options,
)
from experiments.robustness import CLASSIC, Robustness
from experiments.robustness import robustness as run_robustness_sweep
from experiments.spec import Sweep, load
from experiments.sweep import OnResult, OnStart, SweepResult
from experiments.sweep import sweep as run_sweep
from networks import Scenario
from simulator.faults import FaultConfig
from simulator.options import SimulationOptions

if TYPE_CHECKING:  # the training modules bring torch, which the commands load when they run
    from experiments.train import TrainSpec


# ------------------------------------------------------------------ compare, evaluate
@dataclass(frozen=True)
class ComparePlan:
    """Controllers over seeds on one scenario, and where the results go."""

    scenario: Scenario
    controllers: list[str]
    """The controllers, fixed timing (the reference) first."""
    seeds: list[int]
    options: SimulationOptions
    """How every run is simulated."""
    folder: Path
    reference_added: bool
    """Whether fixed timing was not asked for and is run as the reference anyway."""
    kind: str = "compare"
    """The command, as the results folder's manifest names it: ``compare`` or ``evaluate``."""
    overwrite: bool = False
    """Replace a comparison already in the folder."""

    @property
    def runs(self) -> int:
        """Episodes to simulate."""
        return len(self.controllers) * len(self.seeds)

    @property
    def decision_interval(self) -> float:
        """Seconds between decisions."""
        return self.options.decision_interval

    @property
    def title(self) -> str:
        """What the comparison ran on, as its table's title names it."""
        sc = self.scenario
        protocol = "" if self.options.protocol == "greenphase" else \
            f", protocol {self.options.protocol}"
        return (f"{sc.name}: {sc.begin}-{sc.end} s, seeds 0-{len(self.seeds) - 1}, "
                f"demand {self.options.demand}{protocol}")


COMPARE_DEMAND = "resample"
"""The demand mode of ``compare`` and ``evaluate`` when ``--demand`` names none."""


def plan_compare(scenario: Scenario, controllers: Sequence[str], seeds: int, out: Path | None,
                 *, decision_interval: float | None, faults: str, cleaning: str,
                 demand: str = COMPARE_DEMAND, protocol: str = "greenphase",
                 kind: str = "compare", overwrite: bool = False) -> ComparePlan:
    """Check a comparison: simulation options, controller names, results folder.

    ``decision_interval`` ``None`` leaves it to the protocol.

    Raises:
        BadInput: A bad ``--faults``, ``--cleaning``, ``--demand`` or ``--protocol``.
        UnknownControllerError: A controller name that is not known (or tuned on another
            network).
        OutputError: The results folder holds other results or cannot be written.
    """
    fault_config, cleaning = sensor_options(faults, cleaning)
    options = simulation_options(
        protocol, scenario.name, decision_interval=decision_interval,
        faults=str(fault_config), cleaning=cleaning,
        demand=demand_option(demand, COMPARE_DEMAND))
    names = validate_controllers(controllers, network=scenario.name)
    folder = out or layout.fresh(default_folder("compare", scenario.name))
    layout.claim(folder, kind, overwrite=overwrite)
    results.ensure_writable(folder)
    return ComparePlan(scenario, names, list(range(seeds)), options, folder,
                       reference_added=names[0] not in controllers, kind=kind,
                       overwrite=overwrite)


def plan_evaluation(run: Path, where: ScenarioOptions, *, others: Sequence[str], seeds: int,
                    out: Path | None, faults: str, cleaning: str, demand: str = COMPARE_DEMAND,
                    protocol: str = "greenphase", overwrite: bool = False) -> ComparePlan:
    """A trained run against fixed timing (and ``others``), on its network unless one is named.

    The runs use the decision interval the policy was trained with, whatever the protocol.
    """
    from agents.policy import policy_options
    from agents.trained import load_policy

    _, policy = load_policy(run)
    scenario = where.scenario(default=policy.get("network"))
    return plan_compare(scenario, ["fixed", f"trained:{run}", *others], seeds, out,
                        decision_interval=policy_options(policy).decision_interval,
                        faults=faults, cleaning=cleaning, demand=demand, protocol=protocol,
                        kind="evaluate", overwrite=overwrite)


def run_comparison(
    plan: ComparePlan, *, on_step: Callable[[str, int, float], None] | None = None,
) -> Comparison:
    """Run the plan and write its results folder."""
    return run_compare(plan.scenario, plan.controllers, plan.seeds, plan.options,
                       folder=plan.folder, kind=plan.kind, overwrite=plan.overwrite,
                       on_step=on_step)


# ------------------------------------------------------------------ robustness
@dataclass(frozen=True)
class RobustnessPlan:
    """Fixed timing, max-pressure and a trained policy as sensor dropout rises."""

    scenario: Scenario
    trained: str
    """The learned controller, ``trained:RUN``."""
    rates: list[float]
    seeds: list[int]
    base: FaultConfig
    """Faults on at every rate besides dropout."""
    cleaning: str
    options: SimulationOptions
    """How the runs are simulated: with the policy's own decision interval."""
    folder: Path

    @property
    def runs(self) -> int:
        """Episodes to simulate."""
        return len(self.rates) * (len(CLASSIC) + 1) * len(self.seeds)


def plan_robustness(run: Path, where: ScenarioOptions, *, rates: Sequence[float], seeds: int,
                    faults: str, cleaning: str, out: Path | None, demand: str = "fixed",
                    protocol: str = "greenphase", overwrite: bool = False) -> RobustnessPlan:
    """Check a robustness sweep: the sensor options, the trained run, the folder.

    The runs use the decision interval the policy was trained with, whatever the protocol.

    Raises:
        BadInput: Bad ``--faults`` (dropout among them), ``--cleaning``, ``--demand`` or
            ``--protocol``.
    """
    base, cleaning = sensor_options(faults, cleaning)
    if base.dropout:
        raise BadInput("--faults: leave dropout out, --rates sweeps it")
    from agents.policy import policy_options
    from agents.trained import load_policy

    _, policy = load_policy(run)
    scenario = where.scenario(default=policy.get("network"))
    folder = out or layout.fresh(default_folder("robustness", scenario.name))
    options = simulation_options(
        protocol, scenario.name, decision_interval=policy_options(policy).decision_interval,
        demand=demand_option(demand, "fixed"))
    layout.claim(folder, "robustness", overwrite=overwrite)
    results.ensure_writable(folder)
    return RobustnessPlan(scenario, f"trained:{run}", list(rates), list(range(seeds)), base,
                          cleaning, options, folder)


def run_robustness(
    plan: RobustnessPlan, *, on_run: Callable[[float, str, int], None] | None = None,
) -> Robustness:
    """Run the plan and write its results folder."""
    with kept_on_full_disk(plan.folder, "robustness"):
        return run_robustness_sweep(
            plan.scenario, plan.trained, plan.rates, plan.seeds, base=plan.base,
            cleaning=plan.cleaning, on_run=on_run, options=plan.options, folder=plan.folder,
        )


@contextlib.contextmanager
def kept_on_full_disk(folder: Path, command: str) -> Iterator[None]:
    """A store that cannot be written (a full disk) as a run-time failure saying what it kept.

    Raises:
        RunFailed: The store could not be written; the runs stored before are kept.
    """
    then = ("the same command with --resume continues" if command in layout.RESUMABLE
            else f"`greenphase {command} --overwrite` runs them all again")
    try:
        yield
    except results.WriteFailed as err:
        raise RunFailed(f"{err}; kept {err.kept} finished run(s) in {folder / 'store'}; once "
                        f"there is space, {then}") from None
    except OSError as err:  # the files written after the runs: every run is in the store
        raise RunFailed(f"cannot write {err.filename or folder}: {err.strerror or err}; the "
                        f"finished runs are in {folder / 'store'}; once there is space, "
                        f"{then}") from None


# ------------------------------------------------------------------ train
def resumed_spec(run: Path) -> TrainSpec:
    """The training spec stored in a run's last checkpoint."""
    from agents import checkpoint
    from experiments.train import TrainSpec

    stored = checkpoint.load(run / "checkpoints" / "last.pt")
    return TrainSpec.from_dict(stored["spec"])


def training_spec(
    *, algo: str, seed: int, optimizer: str, lr: float, momentum: float, schedule: str,
    batch_mode: str, batch_size: int, weight_decay: float, l1: float, grad_clip: float,
    hidden: str, shared: bool, observation: str, reward: str, eval_every: int, faults: str,
    cleaning: str, normalize: bool, federated: bool, episodes: int | None,
    local_episodes: int | None, rounds: int | None, proximal: float | None,
    demand: str = "fixed", protocol: str = "greenphase", network: str | None = None,
    eval_seeds: int = 1,
) -> TrainSpec:
    """The training spec ``train``'s options give; a ``grad_clip`` of 0 turns clipping off.

    Training episodes run SUMO seeds from 100000 and its evaluations seeds 10000 on
    (``eval_seeds`` of them), so under ``resample`` they draw demand that held-out
    evaluation (seeds below 10000) never sees.

    Raises:
        BadInput: A bad sensor, ``--demand``, ``--protocol``, ``--hidden`` or federated
            option.
        ConfigError: An optimiser or training setting out of range.
    """
    from agents.optim import OptimConfig
    from experiments.train import TrainSpec

    fault_config, cleaning = sensor_options(faults, cleaning)
    optim = OptimConfig(
        optimizer=optimizer, lr=lr, momentum=momentum, schedule=schedule,
        batch_mode=batch_mode, batch_size=batch_size, weight_decay=weight_decay,
        l1=l1, grad_clip=grad_clip if grad_clip > 0 else None,
    )
    return TrainSpec(
        algo=algo, seed=seed, observation=observation, reward=reward, shared=shared,
        hidden=int_list(hidden, "--hidden"), eval_every=eval_every, optim=optim,
        simulation=simulation_options(protocol, network, faults=str(fault_config),
                                      cleaning=cleaning, demand=demand_option(demand, "fixed")),
        normalize=normalize, eval_seeds=eval_seeds,
        **federated_settings(federated, episodes, local_episodes, rounds, proximal),
    )


# ------------------------------------------------------------------ run, sweep
@dataclass(frozen=True)
class SpecOutcome:
    """A spec's sweep, its report and its gates."""

    result: SweepResult
    verdicts: list[gate_checks.Verdict]
    report: Path
    """The report written into the results folder."""

    @property
    def failed_gates(self) -> list[gate_checks.Verdict]:
        """The verdicts that did not pass."""
        return [v for v in self.verdicts if not v.passed]

    def to_json(self) -> dict[str, Any]:
        """The ``run``/``sweep --json`` document: the sweep's, with the gates."""
        return self.result.to_json() | {"gates": [v.to_json() for v in self.verdicts]}


def plan_spec(command: str, spec: Path,
              fail_under: Sequence[str]) -> tuple[Sweep, list[gate_checks.Gate]]:
    """Read the spec and the gates, and check the gates against the spec's controllers.

    Raises:
        BadInput: ``run`` of a spec with a ``[sweep]`` table.
        SpecError: A spec that cannot be read.
        GateError: A gate that cannot be read or names a controller the spec does not run.
    """
    gates = [gate_checks.parse(text) for text in fail_under]
    plan = load(spec)
    if command == "run" and not plan.single:
        raise BadInput(f"{spec} has a [sweep] table: use `greenphase sweep {spec}`")
    gate_checks.check_controllers(gates, sorted({u.controller for u in plan.units}),
                                  sorted({u.label for u in plan.units}))
    return plan, gates


def spec_folder(plan: Sweep, out: Path | None) -> Path:
    """The results folder of a spec: ``out``, or ``runs/<name>`` (so that it resumes).

    Raises:
        BadInput: A name that would put the results outside ``runs/``.
    """
    if out is not None:
        return out
    folder = RUNS / plan.name
    if Path(plan.name).is_absolute() or ".." in Path(plan.name).parts \
            or not folder.resolve().is_relative_to(RUNS.resolve()):
        raise BadInput(f"spec name {plan.name!r} would put its results outside {RUNS}/: "
                       "give the spec a plain name, or --out")
    return folder


def run_spec(
    command: str, plan: Sweep, gates: Sequence[gate_checks.Gate], folder: Path, *,
    workers: int | None, backend: str, address: str | None, resume: bool, overwrite: bool,
    retries: int, on_start: OnStart | None = None, on_result: OnResult | None = None,
) -> SpecOutcome:
    """Run what the store lacks, write the report with the gates, add the step summary."""
    from experiments.report import write_report

    with kept_on_full_disk(folder, command):
        result = run_sweep(plan, folder, workers=workers, backend=backend, address=address,
                           resume=resume, overwrite=overwrite, retries=retries, report=False,
                           kind=command, on_start=on_start, on_result=on_result)
        if result.set_aside:
            from experiments.progress import note

            note(f"damaged runs set aside ({len(result.set_aside)} file(s) moved to "
                 f"{folder / 'store' / 'damaged'}) and run again")
        verdicts = gate_checks.check(gates, result.summary)
        gate_text = gate_checks.markdown(verdicts)
        report = write_report(folder, extra=gate_text)
    gate_checks.append_step_summary(step_summary(command, plan.name, folder, result.summary,
                                                 gate_text))
    return SpecOutcome(result, verdicts, report)


def step_summary(command: str, name: str, folder: Path, summary: pd.DataFrame,
                 gate_text: str) -> str:
    """The GitHub Actions job summary of a ``run`` or ``sweep``: headline, table, gates."""
    from experiments.report import headline, load_runs, summary_markdown

    return (f"### greenphase {command} {name}\n\n{headline(load_runs(folder), None)}\n\n"
            f"{summary_markdown(summary)}\n{gate_text}")
