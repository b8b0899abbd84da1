"""What a replay runs: a run directory's controller on its network, or one named.

:func:`plan` reads what to replay from a run directory:

- a training run (``checkpoints/``): its policy, ``trained:RUN``, on the network
  it was trained on (``spec.toml``, else the checkpoint's metadata);
- a results folder (:mod:`experiments.layout`: a comparison's, or a sweep's with one
  network and traffic cell per controller): its network, and the controller that
  ``controller`` picks among those it ran, with the figures it measured;
- a comparison folder of the old layout (``spec.toml`` with ``command = "compare"``);

or, without a run directory, a scenario and a controller by name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

import networks
from agents import make_controller
from experiments import store
from experiments.experiment import Experiment
from experiments.layout import ReportError, load_runs, old_layout
from experiments.units import LEARNED
from networks import NetworkError, Scenario
from simulator.metrics import KPI_NAMES
from simulator.options import SimulationOptions, validation_message

TIMING = ("decision_interval", "min_green", "max_green")
"""The simulation settings a replay takes from its run: the signal timing."""
MEASURED = (*TIMING, "yellow", "all_red", "protocol", "demand")
"""The settings a replay takes from a results folder's run: the timing and the demand, so
that a resampled run replays the trips it was measured on."""


class ReplayError(ValueError):
    """A run that cannot be replayed as asked; the message is one line."""


@dataclass(frozen=True)
class Replay:
    """What a replay runs: the scenario, controller, seed and signal timing of one run."""

    scenario: Scenario
    """Network, demand and horizon."""
    controller: str
    """Controller name (``fixed``, ``max-pressure``, ``trained:RUN``, ...)."""
    seed: int = 0
    """SUMO seed."""
    options: SimulationOptions = field(default_factory=SimulationOptions)
    """The run's signal timing (decision interval, green limits); the rest the defaults."""
    run: Path | None = None
    """The run directory it comes from, if any."""
    measured: dict[str, float] | None = None
    """The KPIs the run recorded for this controller, seed and horizon, if it has them."""


def _read_spec(run: Path) -> dict[str, Any]:
    path = run / "spec.toml"
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ReplayError(f"{path}: unreadable spec ({reason})") from None


def _scenario_of(spec: dict[str, Any], where: Path) -> Scenario:
    """The scenario a run's ``spec.toml`` names: a registered network, else its own files."""
    name = spec.get("network")
    if not isinstance(name, str):
        raise ReplayError(f"{where}/spec.toml names no network")
    begin, end = spec.get("begin"), spec.get("end")
    net_file = spec.get("net_file")
    with contextlib.suppress(NetworkError):
        registered = networks.get(name)
        # a user's net may share a registered name: the files decide
        if net_file is None or not Path(net_file).is_file() or _same_file(
                registered.net_file, Path(net_file)):
            return dataclasses.replace(
                registered,
                begin=registered.begin if begin is None else int(begin),
                end=registered.end if end is None else int(end),
            )
    if not net_file:
        raise ReplayError(f"{where}: network {name!r} is not registered and the spec has no net")
    return networks.from_files(net_file, spec.get("route_files") or [], begin, end)


def _timing(settings: dict[str, float], where: Path) -> SimulationOptions:
    """The signal timing a run's spec gives (the defaults for what it leaves out)."""
    try:
        return SimulationOptions.model_validate(settings)
    except ValidationError as err:
        raise ReplayError(validation_message(err, str(where))) from None


def _same_file(a: Path, b: Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def _same_network(a: Scenario, b: Scenario) -> bool:
    return a.name == b.name or _same_file(a.net_file, b.net_file)


def _is_training_run(run: Path) -> bool:
    if run.is_file():
        return run.suffix == ".pt"
    return any((run / "checkpoints" / name).is_file() for name in ("best.pt", "last.pt"))


def _measured(run: Path, controller: str, seed: int) -> dict[str, float] | None:
    path = run / "metrics.parquet"
    if not path.is_file():
        return None
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError):
        return None
    rows = frame[(frame["controller"] == controller) & (frame["seed"] == seed)]
    if rows.empty:
        return None
    row = rows.iloc[0].to_dict()
    return {k: float(v) for k, v in row.items() if k not in ("controller", "seed", "wall_s")}


def _choose(compared: Sequence[str], controller: str | None, run: Path) -> str:
    """The controller to replay among those a folder ran."""
    if controller is None and len(compared) == 1:
        controller = compared[0]
    if controller is None:
        raise ReplayError(f"{run} compared {', '.join(compared)}: pick one with --controller")
    if controller not in compared:
        raise ReplayError(f"{run} has no controller {controller!r}; it compared "
                          f"{', '.join(compared)}")
    return controller


def _from_store(run: Path, controller: str | None, seed: int, scenario: Scenario | None
                ) -> tuple[Scenario, str, SimulationOptions, dict[str, float] | None]:
    """A results folder's run: its scenario, controller, signal timing and measured KPIs."""
    try:
        rows = load_runs(run)
    except ReportError as err:
        raise ReplayError(str(err)) from None
    ok = rows[rows["status"] == "ok"]
    if ok.empty:
        raise ReplayError(f"{run} holds no finished run to replay")
    controller = _choose(list(dict.fromkeys(ok["controller"])), controller, run)
    mine = ok[ok["controller"] == controller]
    if scenario is not None and (mine["network"] == scenario.name).any():
        mine = mine[mine["network"] == scenario.name]
    points = list(dict.fromkeys(zip(mine["network"], mine["cell"])))
    if len(points) > 1:
        raise ReplayError(f"{run} ran {controller} on {len(points)} networks or traffic cells; "
                          "replay one by --network and --controller without the folder")
    same_seed = mine[mine["seed"] == seed]
    row = (same_seed if not same_seed.empty else mine).iloc[0]
    resolved = json.loads(row["spec"])
    exp = Experiment(**{k: v for k, v in resolved.items() if k in Experiment.model_fields
                        and k not in ("controllers", "seeds", "training")}, controllers=("fixed",))
    timing = SimulationOptions(**{k: getattr(exp.options, k) for k in MEASURED})
    measured = None if same_seed.empty else {k: float(row[k]) for k in KPI_NAMES}
    if controller in LEARNED:
        controller = f"trained:{run / 'training' / row['hash']}"
    return exp.scenario(), controller, timing, measured


def plan(
    run: Path | None = None,
    *,
    scenario: Scenario | None = None,
    controller: str | None = None,
    seed: int = 0,
    begin: int | None = None,
    end: int | None = None,
) -> Replay:
    """Decide what to replay: a run directory's controller on its network, or a named one.

    Args:
        run: A training run directory (or checkpoint), or a results folder (a comparison's,
            or a sweep's of one network and cell per controller).
        scenario: The network to replay on; with a run it must be the run's network
            (its demand and horizon may differ), without one it is required.
        controller: Which controller: required without a run; for a results folder one
            of those it ran; for a training run it defaults to the run's policy.
        seed: SUMO seed.
        begin: Simulated start in seconds, in place of the scenario's.
        end: Simulated end in seconds, in place of the scenario's.

    Returns:
        The replay to run.

    Raises:
        ReplayError: No run and no network or controller, a folder that holds no
            controller, a controller the run does not have, or a network that is not
            the run's.
    """
    if seed < 0:
        raise ReplayError(f"--seed must be >= 0, got {seed}")
    timing = SimulationOptions()
    measured = None
    if run is None:
        if scenario is None or controller is None:
            raise ReplayError("nothing to replay: give a run directory, or --network and "
                              "--controller")
        chosen = scenario
        if controller.startswith("trained:"):
            from agents.policy import policy_options
            from agents.trained import load_policy

            _, policy = load_policy(Path(controller.removeprefix("trained:")))
            timing = policy_options(policy)
    else:
        if not run.exists():
            raise ReplayError(f"run not found: {run}")
        spec = _read_spec(run) if run.is_dir() else {}
        if _is_training_run(run):
            if spec:
                own = _scenario_of(spec, run)
                settings = {**spec, **spec.get("simulation", {})}  # older runs: top level
                timing = _timing({k: float(settings[k]) for k in TIMING if k in settings},
                                 run / "spec.toml")
            else:
                from agents.policy import policy_options
                from agents.trained import load_policy

                _, policy = load_policy(run)
                own = _scenario_of({"network": policy.get("network")}, run)
                timing = policy_options(policy)
            controller = controller or f"trained:{run}"
        elif (run / store.STORE).is_dir():
            own, controller, timing, measured = _from_store(run, controller, seed, scenario)
        elif spec.get("command") == "compare":  # a comparison of the old layout
            own = _scenario_of(spec, run)
            controller = _choose([str(c) for c in spec.get("controllers", [])], controller, run)
            simulation = spec.get("simulation", {})
            if "decision_interval" in simulation:
                timing = _timing({"decision_interval": float(simulation["decision_interval"])},
                                 run / "spec.toml")
            measured = _measured(run, controller, seed)
        else:
            raise ReplayError(old_layout(run) or f"{run} holds no controller to replay: "
                              "neither a training run (checkpoints/) nor a results folder "
                              "(store/ or a comparison's spec.toml)")
        if scenario is not None and not _same_network(scenario, own):
            raise ReplayError(f"{run} ran on network {own.name!r}, not {scenario.name!r}: leave "
                              f"out --network/--net to replay it on its own")
        chosen = scenario or own
        if measured is not None and (chosen.begin, chosen.end) != (own.begin, own.end):
            measured = None
    if begin is not None or end is not None:
        try:
            chosen = dataclasses.replace(
                chosen,
                begin=chosen.begin if begin is None else begin,
                end=chosen.end if end is None else end,
            )
        except NetworkError as err:
            raise ReplayError(str(err)) from None
        measured = None
    # an unknown name, an unreadable policy or parameters tuned on another network fail
    # before the GUI
    make_controller(controller, network=chosen.name)
    return Replay(chosen, controller, seed, timing, run=run, measured=measured)


