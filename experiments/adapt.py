"""Adapting a deployed policy to recent traffic: a candidate, a shadow evaluation, versions.

``greenphase adapt RUN`` takes the policy a training run deployed (its
``checkpoints/best.pt``, as ``trained:RUN`` runs it) and continues its training
on recent traffic as a *candidate*: the deployed weights, the run's replay buffer
(or, when its checkpoint holds none, a fresh one filled from recent traffic
before the first update), a small learning rate with momentum and a decaying
schedule, little exploration, a few episodes on training seeds. A *shadow
evaluation* then runs the deployed policy and the candidate on the same recent
traffic and tuning seeds; the candidate is promoted only when its mean delay is
lower by at least the margin, else the deployed policy stays (a rollback: the
candidate is kept, marked rejected, and never runs).

Every version is a training run folder of its own, usable as ``trained:DIR``::

    DIR/adapt.json                 the settings and the history: the deployed version
                                   after each step
    DIR/manifest.json              marks the folder as adapt's (experiments.layout.claim)
    DIR/versions/v0/               the deployed policy as received: a copy of its policy
                                   checkpoint (checkpoints/best.pt), spec.toml and
                                   reference.json (what `greenphase monitor` compares with)
    DIR/versions/v1/               a candidate, a training run (experiments.train):
                                   checkpoints/best.pt (the policy), checkpoints/last.pt
                                   (with its replay buffer), spec.toml, curves.csv,
                                   reference.json
    DIR/versions/vK/version.json   parent, when made, training settings and cost,
                                   the shadow evaluation per seed, promoted or rejected
                                   and why

"Recent traffic" is the conditions once the drift's first change has settled, held
stationary over one base period (:meth:`networks.drift.Drift.at`), its demand drawn
anew per seed. Each step trains on its own training seeds and judges on its own
tuning seeds; a later step starts from the version deployed then, with the replay
buffer of the last candidate (the most recent transitions).
"""

from __future__ import annotations

import functools
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import AfterValidator, Field

from agents import checkpoint
from agents.dqn import DQN
from agents.errors import TrainedPolicyError
from agents.models import SignalNetwork
from agents.normalize import RunningNormalizer
from agents.optim import OptimConfig
from agents.policy import build_network, check_signals, policy_path
from agents.settings import Settings
from agents.trained import TrainedController
from experiments import layout, results
from experiments.options import ScenarioOptions, default_folder
from experiments.runner import run_episode
from experiments.train import Trainer, TrainSpec, train, training_seed
from networks import Scenario
from networks.drift import Drift, duration
from networks.files import atomic_write
from simulator.options import SimulationOptions

SHADOW_SEED = 20_000
"""First tuning seed of the shadow evaluations (step ``k`` takes ``SHADOW_SEED + 1000 k + i``):
tuning seeds, so no reported figure (evaluation seeds ``0..N-1``) chose a version."""
ADAPT_JSON = "adapt.json"
VERSIONS = "versions"


class AdaptError(ValueError):
    """Input adapt cannot use (a run it cannot continue, a folder it may not write)."""


def _fraction(value: float) -> float:
    if not 0 <= value < 1:
        raise ValueError(f"must be in [0, 1), got {value!r}")
    return value


class AdaptSettings(Settings):
    """How a candidate is trained and judged."""

    episodes: int = Field(default=10, ge=1)
    """Training episodes of each candidate on recent traffic."""
    optim: OptimConfig = OptimConfig(optimizer="momentum", lr=1e-2, momentum=0.9,
                                     schedule="cosine")
    """The candidate's gradient steps: SGD with momentum 0.9 by default, its learning rate
    decaying along a cosine over the candidate's updates (on cologne8 after a growth of
    30%, 1e-3 left the candidate 52% above a policy retrained from scratch after ten
    episodes, 1e-2 7.5%)."""
    epsilon: float = Field(default=0.05, ge=0, le=1)
    """Exploration rate of the candidate, held over its episodes."""
    margin: Annotated[float, AfterValidator(_fraction)] = 0.02
    """Promote only when the candidate's mean delay is lower by this share of the deployed's."""
    seeds: int = Field(default=5, ge=1)
    """Tuning seeds of each shadow evaluation."""
    steps: int = Field(default=1, ge=1)
    """Adaptation steps: each trains a candidate from the version deployed at the time."""


@dataclass(frozen=True)
class Recent:
    """Recent traffic: one base period simulated under the conditions after a change."""

    scenario: Scenario
    options: SimulationOptions
    label: str
    """In words, e.g. ``growth=+30%@0 (the conditions at 2h1s)``."""

    def to_dict(self) -> dict[str, Any]:
        """What adapt.json records of it."""
        return {"label": self.label, "begin_s": self.scenario.begin,
                "end_s": self.scenario.end, "demand": results.plain(self.options.demand)}


@dataclass
class Deployed:
    """The deployed policy: where it came from, its training spec and its checkpoint."""

    run: Path
    checkpoint: Path
    spec: TrainSpec
    policy: dict[str, Any]
    buffer: dict[str, Any] | None
    """The replay buffer its run kept (``checkpoints/last.pt``), if any."""
    cost: dict[str, Any] = field(default_factory=dict)


RAMPED = ("growth", "od-shift", "sensor-aging")
"""Kinds whose window is a ramp, settled at its end (a closure's or surge's is a span)."""


def settled_at(drift: Drift) -> float:
    """When the drift's first change has settled: a ramp's end, else just after its start."""
    if not drift.changes:
        return 0.0
    first = min(drift.changes, key=lambda change: change.start)
    if first.kind in RAMPED and first.end is not None:
        return first.end
    return first.start + 1.0


def resampled(options: SimulationOptions, drift: Drift) -> SimulationOptions:
    """``options`` under ``drift``, the demand drawn anew per seed at its own scale and bin."""
    demand = options.demand.model_copy(update={"mode": "resample"})
    return options.model_copy(update={"demand": demand, "drift": drift})


def recent_traffic(base: Scenario, options: SimulationOptions, drift_text: str,
                   hours: float) -> Recent:
    """The traffic after the drift's first change, one base period of it, resampled per seed.

    ``options`` are the deployed policy's own (its decision interval, sensors); the
    conditions are the drift's once its first change has settled (:func:`settled_at`),
    held over the period (:meth:`networks.drift.Drift.at`).

    Raises:
        networks.drift.DriftError: A drift that cannot be read or does not fit ``base``.
    """
    drift = Drift.parse(drift_text, hours=hours).check(base)
    at = settled_at(drift)
    now = drift.at(at)
    return Recent(base, resampled(options, now), f"{now} (the conditions at {duration(at)})")


def load_deployed(run: Path) -> Deployed:
    """The policy ``trained:RUN`` deploys, with its run's spec and replay buffer.

    Raises:
        TrainedPolicyError: ``run`` holds no trained policy.
        CheckpointError: Its checkpoint is unreadable.
        AdaptError: It is not a DQN policy (the learner adapt continues).
    """
    path = policy_path(Path(run))
    data = checkpoint.load(path)
    if not isinstance(data.get("policy"), dict) or not isinstance(data.get("spec"), dict):
        raise TrainedPolicyError(f"{run} is not a trained run: its checkpoint holds no "
                                 "policy and training spec")
    spec = TrainSpec.from_dict(data["spec"])
    if spec.algo != "dqn" or spec.federated is not None:
        kind = "federated DQN" if spec.federated is not None else spec.algo
        raise AdaptError(f"{run} is a {kind} policy: adapt continues DQN policies")
    last = path.parent / "last.pt"
    state = checkpoint.load(last) if last.is_file() else {}
    learner = state.get("learner")
    buffer = learner.get("buffer") if isinstance(learner, dict) else None
    cost = {"episodes": int(state.get("episode", data.get("episode", 0))),
            "wall_s": state.get("wall_s")}
    return Deployed(Path(run), path, spec, data["policy"], buffer, cost)


def candidate_spec(deployed: TrainSpec, settings: AdaptSettings, recent: Recent,
                   step: int, *, fresh: bool) -> TrainSpec:
    """The deployed spec continued on recent traffic with the adaptation's settings.

    A fresh replay buffer is filled before the first update (the deployed run's
    ``learning_starts``); a kept one is learnt from at once. Each step draws its own
    training seeds (the learner seed moves by the step).
    """
    dqn = deployed.dqn.replace(epsilon_start=settings.epsilon, epsilon_end=settings.epsilon,
                               learning_starts=deployed.dqn.learning_starts if fresh else 0)
    return deployed.replace(episodes=settings.episodes, seed=deployed.seed + step,
                            optim=settings.optim, dqn=dqn, simulation=recent.options,
                            eval_every=settings.episodes)


def shadow_seeds(step: int, count: int) -> list[int]:
    """The tuning seeds of step ``step``'s shadow evaluation."""
    return [SHADOW_SEED + 1000 * step + i for i in range(count)]


def shadow(version: Path, recent: Recent, seeds: Sequence[int]) -> dict[str, Any]:
    """Run a version's policy on recent traffic, one episode per seed: its KPIs per seed."""
    # in the episode's child it decides on one torch thread (simulator.isolation)
    controller = TrainedController(version)
    runs = []
    for seed in seeds:
        result = run_episode(recent.scenario, controller, seed, recent.options)
        runs.append({"seed": seed, **{k: result.kpis[k] for k in (
            "mean_delay_s", "vehicles", "unfinished")}, "wall_s": result.wall_s})
    delays = [r["mean_delay_s"] for r in runs]
    mean = sum(delays) / len(delays) if all(map(math.isfinite, delays)) else math.nan
    return {"seeds": list(seeds), "mean_delay_s": mean, "runs": runs}


def verdict(candidate: float, deployed: float, margin: float) -> tuple[bool, str]:
    """Whether a candidate of mean delay ``candidate`` replaces one of ``deployed``, and why."""
    if not math.isfinite(candidate):
        return False, "its shadow evaluation has no finite mean delay"
    if not math.isfinite(deployed):
        return False, "the deployed policy's shadow evaluation has no finite mean delay"
    gain = 1 - candidate / deployed
    words = (f"mean delay {candidate:.2f} s against {deployed:.2f} s deployed "
             f"({gain:+.1%} lower; margin {margin:.1%})")
    if gain >= margin:
        return True, words
    return False, words + ": not better by the margin"


Tamper = Callable[[SignalNetwork], None]
"""Changes a candidate's network after its training (tests make it worse on purpose)."""


@dataclass
class Candidate:
    """A trained candidate: its folder, spec, cost and the buffer it ended with."""

    folder: Path
    spec: TrainSpec
    cost: dict[str, Any]
    buffer: dict[str, Any]
    failure: str = ""
    """Why it cannot be deployed before any evaluation (diverged, non-finite weights)."""


def _start_from(trainer: Trainer, policy: dict[str, Any], buffer: dict[str, Any] | None) -> None:
    """The trainer's learner at the deployed weights (online and target) and replay buffer."""
    learner = trainer.learner
    assert isinstance(learner, DQN)
    if trainer.agents != list(policy["tls_ids"]):
        raise TrainedPolicyError(
            f"the deployed policy was trained on network {policy.get('network')!r} "
            f"({len(policy['tls_ids'])} signals), not this one ({len(trainer.agents)} signals)")
    try:
        trainer.net.load_state_dict(policy["net"])
    except RuntimeError as err:
        raise TrainedPolicyError(f"the deployed policy does not fit this network "
                                 f"({' '.join(str(err).split())})") from None
    learner.target.load_state_dict(policy["net"])
    if buffer is not None:
        learner.buffer.load_state_dict(buffer)
    if trainer.normalizer is not None and policy.get("obs_norm") is not None:
        start = RunningNormalizer.from_policy(policy["obs_norm"])
        trainer.normalizer.load_state_dict(start.state_dict())


def train_candidate(folder: Path, spec: TrainSpec, recent: Recent, policy: dict[str, Any],
                    buffer: dict[str, Any] | None, tamper: Tamper | None = None) -> Candidate:
    """Continue ``policy`` on recent traffic into ``folder``, a training run of its own.

    The candidate's first checkpoint holds the deployed weights (online and target
    network) and the replay buffer; :func:`experiments.train.train` continues from it as
    it resumes any run. ``tamper`` then changes the policy it saved.
    """
    trainer = Trainer(spec, recent.scenario, folder)
    try:
        _start_from(trainer, policy, buffer)
        trainer.save("last", full=True)
    finally:
        trainer.close()
    result = train(spec, recent.scenario, folder, resume=True)
    failure = f"its {result.stopped}" if result.stopped else ""
    path = policy_path(folder)
    saved = checkpoint.load(path)
    if tamper is not None:
        net = build_network(saved["policy"])
        net.load_state_dict(saved["policy"]["net"])
        tamper(net)
        saved["policy"]["net"] = net.state_dict()
        checkpoint.save(path, saved)
    if not failure and not all(bool(torch.isfinite(w).all())
                               for w in saved["policy"]["net"].values()):
        failure = "its weights are not all finite numbers"
    last = checkpoint.load(folder / "checkpoints" / "last.pt")["learner"]
    cost = {"episodes": result.episodes, "wall_s": round(result.wall_s, 2),
            "updates": int(last["stepper"]["updates"]),
            "seeds": [training_seed(spec, e) for e in range(result.episodes)]}
    return Candidate(folder, spec, cost, last["buffer"], failure)


def write_spec(folder: Path, spec: TrainSpec, scenario: Scenario, command: str) -> Path:
    """``spec.toml`` as ``train`` writes it: the command, the scenario, the training spec."""
    return results.write_toml(folder / "spec.toml", {
        "command": command, "network": scenario.name, "net_file": str(scenario.net_file),
        "route_files": [str(r) for r in scenario.route_files],
        "begin": scenario.begin, "end": scenario.end, **spec.to_dict()})


def now() -> str:
    """The time, as the versions record it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def claim(folder: Path, *, overwrite: bool) -> Path:
    """Take ``folder`` for adapt's results: new or empty, or adapt's own with ``overwrite``.

    Raises:
        experiments.results.OutputError: It holds other results, other files, or adapt's
            without ``overwrite``.
    """
    folder = layout.claim(folder, "adapt", overwrite=overwrite)
    if (folder / ADAPT_JSON).exists() or (folder / VERSIONS).exists():
        if not overwrite:
            raise results.OutputError(f"{folder} already holds the versions of `greenphase "
                                      "adapt`: use --overwrite to replace them, or give "
                                      "another --out")
        shutil.rmtree(folder / VERSIONS, ignore_errors=True)
        (folder / ADAPT_JSON).unlink(missing_ok=True)
    results.ensure_writable(folder)
    results.write_json(folder / layout.MANIFEST, {
        "layout": layout.LAYOUT_VERSION, "kind": "adapt", "name": folder.resolve().name,
        "written_at": now(), "runs": []})
    return folder


def copy_deployed(deployed: Deployed, folder: Path, scenario: Scenario) -> None:
    """Version 0: the deployed policy's checkpoint and spec, as received."""
    copies = {deployed.checkpoint: folder / "checkpoints" / "best.pt"}
    reference = deployed.checkpoint.parent.parent / "reference.json"  # for `greenphase monitor`
    if reference.is_file():
        copies[reference] = folder / "reference.json"
    for source, target in copies.items():
        atomic_write(target, functools.partial(shutil.copyfile, source))
    write_spec(folder, deployed.spec, scenario, "train")


@dataclass
class AdaptResult:
    """What an adaptation did: the versions it made and which one is deployed."""

    folder: Path
    deployed: str
    versions: list[dict[str, Any]]
    history: list[dict[str, Any]]

    @property
    def controller(self) -> str:
        """The controller name of the deployed version."""
        return f"trained:{self.folder / VERSIONS / self.deployed}"

    def to_json(self) -> dict[str, Any]:
        """The ``adapt --json`` document."""
        return dict(results.plain({
            "folder": str(self.folder), "deployed": self.deployed,
            "controller": self.controller, "history": self.history,
            "versions": self.versions}))


def adapt(deployed: Deployed, recent: Recent, folder: Path, settings: AdaptSettings, *,
          base: Scenario, about: dict[str, Any] | None = None, tamper: Tamper | None = None,
          on_step: Callable[[dict[str, Any]], None] | None = None) -> AdaptResult:
    """Adapt ``deployed`` to ``recent`` traffic in ``settings.steps`` steps into ``folder``.

    ``folder`` must have been taken with :func:`claim`. ``about`` joins adapt.json (the
    drift, the network); ``tamper`` changes each candidate's network after its training.
    """
    torch.set_num_threads(1)
    versions_dir = folder / VERSIONS
    copy_deployed(deployed, versions_dir / "v0", base)
    v0: dict[str, Any] = {
        "version": "v0", "parent": None, "made_at": now(), "source": str(deployed.run),
        "checkpoint": str(deployed.checkpoint), "training": deployed.cost, "shadow": [],
        "status": "deployed", "reason": "the policy deployed when adaptation began"}
    versions, current = [v0], v0
    history: list[dict[str, Any]] = [{"step": 0, "deployed": "v0", "at": v0["made_at"]}]
    policy, buffer = deployed.policy, deployed.buffer

    def save() -> None:
        for v in versions:
            results.write_json(versions_dir / v["version"] / "version.json", results.plain(v))
        results.write_json(folder / ADAPT_JSON, results.plain({
            **(about or {}), "run": str(deployed.run), "recent": recent.to_dict(),
            "settings": settings.to_dict(), "history": history,
            "deployed": current["version"],
            "controller": f"trained:{versions_dir / current['version']}"}))

    for step in range(1, settings.steps + 1):
        name = f"v{step}"
        spec = candidate_spec(deployed.spec, settings, recent, step, fresh=buffer is None)
        made = train_candidate(versions_dir / name, spec, recent, policy, buffer, tamper)
        seeds = shadow_seeds(step, settings.seeds)
        ours = None if made.failure else shadow(made.folder, recent, seeds)
        theirs = shadow(versions_dir / current["version"], recent, seeds)
        current["shadow"].append({"step": step, "role": "deployed", **theirs})
        if ours is None:
            promoted, reason = False, made.failure
        else:
            promoted, reason = verdict(ours["mean_delay_s"], theirs["mean_delay_s"],
                                       settings.margin)
        version: dict[str, Any] = {"version": name, "parent": current["version"], "made_at": now(),
                   "training": {**made.cost, "replay": "fresh" if buffer is None else "kept",
                                "epsilon": settings.epsilon, "optim": spec.optim.to_dict()},
                   "shadow": [] if ours is None else [{"step": step, "role": "candidate",
                                                       **ours}],
                   "status": "promoted" if promoted else "rejected", "reason": reason}
        versions.append(version)
        if promoted:
            current["status"] = "retired"
            current = version
            policy = checkpoint.load(made.folder / "checkpoints" / "best.pt")["policy"]
        buffer = made.buffer
        history.append({"step": step, "candidate": name, "decision": version["status"],
                        "reason": reason, "deployed": current["version"], "at": now()})
        save()
        if on_step is not None:
            on_step(history[-1])
    save()
    return AdaptResult(folder, current["version"], versions, history)



def check_network(deployed: Deployed, scenario: Scenario) -> None:
    """Refuse a scenario whose signals are not those the policy was trained on."""
    check_signals({"tls_ids": [], **deployed.policy}, scenario.name, scenario.net.tls_ids,
                  deployed.run)


def adapt_run(run: Path, where: ScenarioOptions, drift_text: str, hours: float,
              settings: AdaptSettings, *, out: Path | None = None, overwrite: bool = False,
              tamper: Tamper | None = None,
              on_step: Callable[[dict[str, Any]], None] | None = None) -> AdaptResult:
    """``greenphase adapt``: every input checked before ``out`` is taken, then :func:`adapt`.

    The scenario is the one ``where`` names, else the network the policy was trained on.
    """
    deployed = load_deployed(run)
    base = where.scenario(default=deployed.policy.get("network"))
    check_network(deployed, base)
    recent = recent_traffic(base, deployed.spec.simulation, drift_text, hours)
    folder = claim(out or default_folder("adapt", base.name), overwrite=overwrite)
    about = {"network": base.name, "drift": drift_text, "hours": hours}
    return adapt(deployed, recent, folder, settings, base=base, about=about, tamper=tamper,
                 on_step=on_step)
