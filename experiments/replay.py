"""Replaying a run in sumo-gui: the same network, demand, seed and controller as measured.

A replay is an ordinary episode (:func:`experiments.runner.run_episode`)
through TraCI with the GUI switched on; the GUI only watches, so a replay's
figures equal those of the headless run with the same controller and seed.

:func:`plan` reads what to replay from a run directory:

- a training run (``checkpoints/``): its policy, ``trained:RUN``, on the network
  it was trained on (``spec.toml``, else the checkpoint's metadata);
- a ``compare`` results folder (``spec.toml`` with ``command = "compare"``): its
  network, and the controller that ``controller`` picks among those compared;

or, without a run directory, a scenario and a controller by name.
:func:`replay` runs it in sumo-gui, vehicles coloured by waiting time, or
headless under a virtual display, saving screenshots at chosen simulated times.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import shutil
import sys
import tempfile
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

import networks
from agents import make_controller
from experiments import results
from experiments.display import DisplayError, display
from experiments.runner import run_episode
from networks import NetworkError, Scenario
from simulator import TrafficSimulation
from simulator.sumo import sumo_binary, sumo_home

VIEW = "View #0"
"""sumo-gui's first (and only) view: TraCI's ``gui.DEFAULT_VIEW``."""
WINDOW = (1280, 1024)
"""sumo-gui's window size in pixels; screenshots are the size of its view, a little smaller."""
DEFAULT_DELAY_MS = 50
"""Real milliseconds per simulated second in an interactive replay (slow enough to watch)."""
WAITING_COLOURS = ((0.0, "0,170,0"), (20.0, "255,215,0"), (60.0, "255,120,0"), (120.0, "220,0,0"))
"""Vehicle colour by the seconds it has been waiting: moving green, then yellow, orange, red."""
WAITING_TIME_MODE = 10
"""sumo-gui's index of the vehicle colouring "by waiting time" (SUMO 1.28; checked by a test)."""


class ReplayError(ValueError):
    """A run that cannot be replayed as asked; the message is one line."""


class GuiClosedError(RuntimeError):
    """sumo-gui went away (its window was closed) before the replay's end."""


@dataclass(frozen=True)
class Replay:
    """What a replay runs: the scenario, controller, seed and signal timing of one run."""

    scenario: Scenario
    """Network, demand and horizon."""
    controller: str
    """Controller name (``fixed``, ``max-pressure``, ``trained:RUN``, ...)."""
    seed: int = 0
    """SUMO seed."""
    decision_interval: float = 5.0
    """Seconds between decisions."""
    min_green: float = 5.0
    """Shortest green in seconds."""
    max_green: float = 50.0
    """Longest green in seconds."""
    run: Path | None = None
    """The run directory it comes from, if any."""
    measured: dict[str, float] | None = None
    """The KPIs the run recorded for this controller, seed and horizon, if it has them."""


@dataclass(frozen=True)
class ReplayResult:
    """What a replay measured and saved."""

    kpis: dict[str, float]
    """The episode's figures; over the whole horizon unless screenshots cut it short."""
    screenshots: tuple[Path, ...]
    """PNG files written, in the order of their times."""
    end: int
    """Simulated time at which the replay stopped."""


# ---------------------------------------------------------------- planning
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
        run: A training run directory (or checkpoint), or a ``compare`` results folder.
        scenario: The network to replay on; with a run it must be the run's network
            (its demand and horizon may differ), without one it is required.
        controller: Which controller: required without a run; for a ``compare`` folder one
            of those compared; for a training run it defaults to the run's policy.
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
    timing: dict[str, float] = {}
    measured = None
    if run is None:
        if scenario is None or controller is None:
            raise ReplayError("nothing to replay: give a run directory, or --network and "
                              "--controller")
        chosen = scenario
        if controller.startswith("trained:"):
            from agents.trained import load_policy

            _, policy = load_policy(Path(controller.removeprefix("trained:")))
            timing["decision_interval"] = float(policy.get("decision_interval", 5.0))
    else:
        if not run.exists():
            raise ReplayError(f"run not found: {run}")
        spec = _read_spec(run) if run.is_dir() else {}
        if _is_training_run(run):
            if spec:
                own = _scenario_of(spec, run)
                timing = {k: float(spec[k]) for k in ("decision_interval", "min_green",
                                                      "max_green") if k in spec}
            else:
                from agents.trained import load_policy

                _, policy = load_policy(run)
                own = _scenario_of({"network": policy.get("network")}, run)
                timing["decision_interval"] = float(policy.get("decision_interval", 5.0))
            controller = controller or f"trained:{run}"
        elif spec.get("command") == "compare":
            own = _scenario_of(spec, run)
            compared = [str(c) for c in spec.get("controllers", [])]
            if controller is None and len(compared) == 1:
                controller = compared[0]
            if controller is None:
                raise ReplayError(f"{run} compared {', '.join(compared)}: pick one with "
                                  f"--controller")
            if controller not in compared:
                raise ReplayError(f"{run} has no controller {controller!r}; it compared "
                                  f"{', '.join(compared)}")
            simulation = spec.get("simulation", {})
            if "decision_interval" in simulation:
                timing["decision_interval"] = float(simulation["decision_interval"])
            measured = _measured(run, controller, seed)
        else:
            raise ReplayError(f"{run} holds no controller to replay: neither a training run "
                              f"(checkpoints/) nor a compare results folder (spec.toml)")
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
    make_controller(controller)  # an unknown name or unreadable policy fails before the GUI
    return Replay(chosen, controller, seed, run=run, measured=measured, **timing)


# ------------------------------------------------------------ GUI settings
def net_boundary(net_file: Path) -> tuple[float, float, float, float]:
    """The net's extent ``(xmin, ymin, xmax, ymax)`` in its own coordinates (``convBoundary``)."""
    try:
        for _, elem in ET.iterparse(net_file, events=("start",)):
            if elem.tag == "location":
                box = [float(v) for v in elem.get("convBoundary", "").split(",")]
                if len(box) == 4:
                    return box[0], box[1], box[2], box[3]
                break
    except (ET.ParseError, ValueError):
        pass
    raise ReplayError(f"{net_file}: no <location convBoundary> to frame the view with")


def gui_settings(net_file: Path, *, delay_ms: int, size: tuple[int, int] = WINDOW) -> str:
    """sumo-gui's view settings: vehicles by waiting time, the whole network in view.

    Vehicles are drawn larger on large networks, so that they can be told apart
    from the roads at the zoom that shows the whole network.
    """
    xmin, ymin, xmax, ymax = net_boundary(net_file)
    metres_per_pixel = max((xmax - xmin) / size[0], (ymax - ymin) / (0.8 * size[1]), 0.1)
    vehicle_scale = min(max(3.0 * metres_per_pixel, 1.0), 10.0)
    lane_scale = min(max(1.0 * metres_per_pixel, 1.0), 4.0)  # wider lanes show the signals
    colours = "\n".join(
        f'                <entry color="{colour}" threshold="{wait:.2f}"/>'
        for wait, colour in WAITING_COLOURS
    )
    return f"""<viewsettings>
    <scheme name="greenphase">
        <edges widthExaggeration="{lane_scale:.2f}"/>
        <vehicles vehicleMode="{WAITING_TIME_MODE}" vehicleQuality="2" vehicle_minSize="1.00"
                  vehicle_exaggeration="{vehicle_scale:.2f}" vehicle_constantSize="0"
                  showBlinker="0">
            <colorScheme name="by waiting time" interpolated="1">
{colours}
            </colorScheme>
        </vehicles>
        <legend showSizeLegend="1" showColorLegend="0" showVehicleColorLegend="1"/>
    </scheme>
    <viewport zoom="95" x="{(xmin + xmax) / 2:.2f}" y="{(ymin + ymax) / 2:.2f}"/>
    <delay value="{delay_ms}"/>
</viewsettings>
"""


def gui_args(settings: Path, *, delay_ms: int) -> list[str]:
    """sumo-gui's extra options: start at once, close at the end, our view settings."""
    return [
        "--start", "--quit-on-end",
        "--delay", str(delay_ms),
        "--gui-settings-file", str(settings),
        "--window-size", f"{WINDOW[0]},{WINDOW[1]}",
    ]


# ------------------------------------------------------------- screenshots
def screenshot_paths(file: Path, times: Sequence[float]) -> list[Path]:
    """One PNG per time: ``file`` itself for one time, else ``<stem>-<t>s.png`` beside it."""
    if len(times) == 1:
        return [file]
    return [file.with_name(f"{file.stem}-{t:g}s{file.suffix or '.png'}") for t in times]


class _Camera:
    """Asks sumo-gui for a screenshot once the simulation reaches each requested time."""

    def __init__(self, begin: float, shots: Sequence[tuple[float, Path]]) -> None:
        self.begin = begin
        self.pending = sorted(shots)

    def __call__(self, sim: TrafficSimulation) -> None:
        # sumo-gui renders the picture during the next simulation step
        while self.pending and sim.time >= self.begin + self.pending[0][0] - 1e-9:
            _, path = self.pending.pop(0)
            sim.connection.gui.screenshot(VIEW, str(path))


@contextlib.contextmanager
def _gui_environment() -> Iterator[None]:
    """PROJ's data for sumo-gui's geo-coordinates; TraCI's connection chatter to stderr."""
    proj = sumo_home() / "data" / "proj"
    saved = {k: os.environ.get(k) for k in ("PROJ_DATA", "PROJ_LIB")}
    if proj.is_dir():
        for key in saved:
            os.environ.setdefault(key, str(proj))
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def replay(
    target: Replay,
    *,
    delay_ms: int = DEFAULT_DELAY_MS,
    screenshot: Path | None = None,
    at: Sequence[float] = (),
    on_step: Callable[[float], None] | None = None,
) -> ReplayResult:
    """Run a replay in sumo-gui; with ``screenshot``, headless, saving PNGs, then stop.

    Args:
        target: What to replay (see :func:`plan`).
        delay_ms: Real milliseconds per simulated step in the GUI (ignored for screenshots).
        screenshot: PNG file to write; with it the replay needs no screen (a virtual
            display is started when ``$DISPLAY`` is unset) and stops after the last picture.
        at: Simulated seconds from the scenario's begin at which to take the pictures
            (rounded up to the next decision step); default: the end of the horizon.
        on_step: Called with the simulated time after each decision step.

    Returns:
        The replay's KPIs and the screenshots written.

    Raises:
        ReplayError: A time outside the horizon, or a screenshot that was not written.
        DisplayError: No display, and none can be started.
        SumoError: sumo-gui is missing or refused to start.
        GuiClosedError: sumo-gui went away before the end (its window was closed).
    """
    import traci

    sumo_binary("sumo-gui")  # a missing GUI is one clear error before anything starts
    if delay_ms < 0:
        raise ReplayError(f"--delay must be >= 0, got {delay_ms}")
    scenario = target.scenario
    shots: list[tuple[float, Path]] = []
    if screenshot is None:
        if at:
            raise ReplayError("--at needs --screenshot FILE")
        if not os.environ.get("DISPLAY"):
            raise DisplayError("no display to show sumo-gui on ($DISPLAY is not set): use "
                               "--screenshot FILE for a headless replay")
    else:
        times = sorted(set(at)) or [float(scenario.horizon_s)]
        for t in times:
            if not 0 <= t <= scenario.horizon_s or not math.isfinite(t):
                raise ReplayError(f"--at {t:g} is outside the replay's horizon (0 to "
                                  f"{scenario.horizon_s} s from its begin, {scenario.begin} s)")
        shots = list(zip(times, screenshot_paths(screenshot, times)))
        for _, path in shots:
            results.ensure_writable(path.parent.resolve())
        # one decision step past the last picture, which the GUI renders in the next step
        step_s = target.decision_interval
        last = scenario.begin + math.ceil(times[-1] / step_s) * step_s
        scenario = dataclasses.replace(scenario, end=math.ceil(last + step_s))
        delay_ms = 0
    with tempfile.TemporaryDirectory(prefix="greenphase-replay-") as tmp:
        workdir = Path(tmp)
        settings = workdir / "gui-settings.xml"
        settings.write_text(gui_settings(scenario.net_file, delay_ms=delay_ms))
        raw = [(t, workdir / f"shot-{i}.png") for i, (t, _) in enumerate(shots)]
        camera = _Camera(scenario.begin, raw) if shots else None
        screen = display() if shots else contextlib.nullcontext(os.environ.get("DISPLAY"))
        reached = [float(scenario.begin)]

        def step(t: float) -> None:
            reached[0] = t
            if on_step is not None:
                on_step(t)

        with screen, _gui_environment():
            try:
                result = run_episode(
                    scenario, target.controller, target.seed,
                    decision_interval=target.decision_interval,
                    min_green=target.min_green, max_green=target.max_green,
                    on_step=step, observer=camera,
                    backend="traci", gui=True, sumo_args=gui_args(settings, delay_ms=delay_ms),
                )
            except traci.exceptions.FatalTraCIError:
                raise GuiClosedError(f"sumo-gui closed at {reached[0]:g} s, before the "
                                     f"replay's end ({scenario.end} s)") from None
        written = []
        for (t, src), (_, dest) in zip(raw, shots):
            if not src.is_file() or src.stat().st_size == 0:
                raise ReplayError(f"sumo-gui wrote no screenshot for --at {t:g}")
            results.atomic_write(dest, functools.partial(shutil.copyfile, src))
            written.append(dest)
    return ReplayResult(result.kpis, tuple(written), scenario.end)


__all__ = [
    "DisplayError",
    "GuiClosedError",
    "Replay",
    "ReplayError",
    "ReplayResult",
    "gui_settings",
    "plan",
    "replay",
    "screenshot_paths",
]
