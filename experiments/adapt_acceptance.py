"""Whether adapting pays: the deployed, adapted and retrained policies after a change.

:func:`acceptance` adapts a deployed policy to the traffic after a drift's change
(:func:`experiments.adapt.adapt`), trains a policy from scratch on that traffic with
the deployed run's own settings, and runs the three on the drifted scenario over
evaluation seeds ``0..N-1``: each one's mean delay of the vehicles scheduled to
depart in the last hours, and what each cost to train. The issue's test: the
adapted policy lower than the unadapted one, and within 10% of the retrained one.

Each policy runs the whole drifted horizon (the adapted one from the start, as if
deployed all along); only the vehicles of the last hours count, long after the change.

::

    DIR/acceptance.json   per policy: training cost, delay per seed, mean; the verdict
    DIR/adapt/            the adaptation (adapt's layout)
    DIR/scratch/          the policy trained from scratch (a training run), kept across
                          calls with the same run and drift (``--overwrite`` included)
    DIR/measured/         each policy's runs on the drifted scenario, reused while its
                          weights and the scenario stay the same
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from agents.policy import policy_path
from agents.trained import TrainedController
from experiments import results
from experiments.adapt import (
    AdaptSettings,
    adapt,
    check_network,
    claim,
    load_deployed,
    recent_traffic,
    resampled,
)
from experiments.limits import TooLargeError, check_horizon
from experiments.options import BadInput, ScenarioOptions
from experiments.runner import run_episode
from experiments.train import train
from networks import Scenario
from networks.drift import Drift
from networks.files import file_digest
from simulator.options import SimulationOptions

WITHIN = 0.10
"""How close to the retrained policy the adapted one must come (share of its delay)."""


def late_delay(trips: pd.DataFrame, end: float, window_s: float) -> tuple[float, int]:
    """Mean delay of the trips scheduled to depart in the last ``window_s``, and their count.

    A trip's scheduled departure is its departure less its depart delay (a vehicle never
    inserted is charged to the end, as :func:`simulator.metrics.delay_over_time` does).
    """
    if trips.empty:
        return math.nan, 0
    depart = np.where(trips["inserted"].to_numpy(bool), trips["depart_s"].to_numpy(float), end)
    scheduled = depart - trips["depart_delay_s"].to_numpy(float)
    late = trips["delay_s"].to_numpy(float)[scheduled >= end - window_s]
    return (float(late.mean()) if len(late) else math.nan), int(len(late))


@dataclass(frozen=True)
class Drifted:
    """The drifted scenario the policies are measured on."""

    scenario: Scenario
    options: SimulationOptions
    window_s: float
    """The last stretch whose vehicles count."""


def drifted(base: Scenario, options: SimulationOptions, drift_text: str, hours: float,
            last_hours: float, *, allow_large: bool = False) -> Drifted:
    """The drifted scenario over ``hours``, its demand drawn anew per seed.

    Raises:
        BadInput: ``hours`` above the limit of :mod:`experiments.limits`.
        networks.drift.DriftError: A drift that cannot be read or does not fit ``base``.
    """
    try:
        check_horizon(hours * 3600, allow_large=allow_large)
    except TooLargeError as err:
        raise BadInput(f"--hours: {err}") from None
    drift = Drift.parse(drift_text, hours=hours).check(base)
    long = drift.scenario(base)
    return Drifted(long, resampled(options, drift), min(last_hours * 3600.0, long.horizon_s))


def _key(policy: Path, where: Drifted) -> str:
    """What decides a policy's runs on the drifted scenario: its weights and the scenario."""
    text = json.dumps([file_digest(policy_path(policy)), where.scenario.name,
                       where.scenario.begin, where.scenario.end,
                       where.options.model_dump(mode="json"), where.window_s])
    return hashlib.sha256(text.encode()).hexdigest()


def _late_run(policy: Path, where: Drifted, seed: int) -> dict[str, Any]:
    result = run_episode(where.scenario, TrainedController(policy), seed, where.options)
    delay, count = late_delay(result.trips, float(where.scenario.end), where.window_s)
    return {"seed": seed, "late_delay_s": delay, "late_vehicles": count,
            "mean_delay_s": result.kpis["mean_delay_s"], "wall_s": result.wall_s}


def measure(policies: Mapping[str, Path], where: Drifted, seeds: range, folder: Path, *,
            workers: int = 1, on_run: Callable[[str], None] | None = None
            ) -> dict[str, dict[str, Any]]:
    """Each policy's late delay on each seed of the drifted scenario, and their mean.

    Every finished run is kept in ``folder/measured/NAME.json`` under the policy's weights
    and the scenario, so a call with the same policy and scenario reuses it. With
    ``workers`` above 1, that many runs go side by side (each simulates in a process of
    its own; an interrupt waits for the running ones).
    """
    done: dict[str, dict[int, dict[str, Any]]] = {}
    for name, policy in policies.items():
        path = folder / "measured" / f"{name}.json"
        kept = results.read_json(path) if path.is_file() else {}
        same = isinstance(kept, dict) and kept.get("key") == _key(policy, where)
        done[name] = {int(r["seed"]): r for r in kept["runs"]} if same else {}

    def finished(name: str, run: dict[str, Any]) -> None:
        done[name][run["seed"]] = run
        results.write_json(folder / "measured" / f"{name}.json", results.plain({
            "key": _key(policies[name], where), "policy": str(policies[name]),
            "runs": sorted(done[name].values(), key=lambda r: r["seed"])}))
        if on_run is not None:
            on_run(f"{name}: seed {run['seed']}, late delay {run['late_delay_s']:.2f} s")

    todo = [(name, seed) for name in policies for seed in seeds if seed not in done[name]]
    if workers <= 1:
        for name, seed in todo:
            finished(name, _late_run(policies[name], where, seed))
    else:
        with ThreadPoolExecutor(workers) as pool:
            futures = {pool.submit(_late_run, policies[name], where, seed): name
                       for name, seed in todo}
            for future in as_completed(futures):
                finished(futures[future], future.result())
    return {name: {"policy": str(policy), "runs": [done[name][s] for s in seeds],
                   "late_delay_s": float(np.mean([done[name][s]["late_delay_s"]
                                                  for s in seeds]))}
            for name, policy in policies.items()}


def acceptance(run: Path, where: ScenarioOptions, drift_text: str, hours: float, out: Path,
               settings: AdaptSettings, *, seeds: int = 5, last_hours: float = 2.0,
               overwrite: bool = False, workers: int = 1,
               on_run: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Adapt, retrain from scratch, and measure the three policies after the change."""
    torch.set_num_threads(1)
    deployed = load_deployed(run)
    base = where.scenario(default=deployed.policy.get("network"))
    check_network(deployed, base)
    recent = recent_traffic(base, deployed.spec.simulation, drift_text, hours)
    where_to = drifted(base, deployed.spec.simulation, drift_text, hours, last_hours,
                       allow_large=bool(where.allow_large))
    claim(out, overwrite=overwrite)
    adapted = adapt(deployed, recent, claim(out / "adapt", overwrite=overwrite), settings,
                    base=base, about={"network": base.name, "drift": drift_text,
                                      "hours": hours})
    scratch_spec = deployed.spec.replace(simulation=recent.options)
    # the scratch run depends on the run and the drift only: one of an earlier call is
    # continued or reused (its checkpoints keep its wall time), even under ``overwrite``
    again = (out / "scratch" / "checkpoints" / "last.pt").is_file()
    scratch = train(scratch_spec, recent.scenario, out / "scratch", resume=again)
    candidate = next(v for v in adapted.versions if v["version"] != "v0")
    policies = {
        "deployed": (deployed.run, deployed.cost),
        "adapted": (out / "adapt" / "versions" / adapted.deployed,
                    {"deployed": deployed.cost, "adaptation": candidate["training"],
                     "promoted": adapted.deployed != "v0"}),
        "scratch": (out / "scratch", {"episodes": scratch.episodes,
                                      "wall_s": round(scratch.wall_s, 2)}),
    }
    measured = measure({name: path for name, (path, _) in policies.items()}, where_to,
                       range(seeds), out, workers=workers, on_run=on_run)
    figures = {name: {**measured[name], "cost": cost} for name, (_, cost) in policies.items()}
    a, b, c = (figures[k]["late_delay_s"] for k in ("deployed", "adapted", "scratch"))
    doc = {"run": str(run), "network": base.name, "drift": drift_text, "hours": hours,
           "recent": recent.to_dict(), "window_s": where_to.window_s,
           "seeds": list(range(seeds)), "settings": settings.to_dict(), "policies": figures,
           "adapted_below_deployed": b < a, "adapted_vs_scratch": b / c - 1,
           "within": WITHIN, "accepted": bool(b < a and b <= c * (1 + WITHIN))}
    results.write_json(out / "acceptance.json", results.plain(doc))
    return doc


def headline(doc: dict[str, Any]) -> str:
    """The figures in a few lines: each policy's late delay and training cost, the verdict."""
    lines = [f"{doc['network']}, {doc['drift'] or 'no drift'} over {doc['hours']:g} h, "
             f"seeds 0-{len(doc['seeds']) - 1}: mean delay of the last "
             f"{doc['window_s'] / 3600:g} h"]
    for name, figure in doc["policies"].items():
        lines.append(f"  {name:9s} {figure['late_delay_s']:7.2f} s  ({figure['policy']})")
    verdict = "accepted" if doc["accepted"] else "not accepted"
    lines.append(f"adapted vs scratch {doc['adapted_vs_scratch']:+.1%}; "
                 f"adapted below deployed: {doc['adapted_below_deployed']}; {verdict}")
    return "\n".join(lines)
