"""Replaying a run in sumo-gui: the same network, demand, seed and controller as measured.

A replay is an ordinary episode (:func:`experiments.runner.run_episode`)
through TraCI with the GUI switched on; the GUI only watches, so a replay's
figures equal those of the headless run with the same controller and seed.
What to replay comes from :func:`plan` (:mod:`experiments.replay_plan`): a training
run, a results folder, or a network and a controller by name. :func:`replay` runs it
in sumo-gui, vehicles coloured by waiting time, or headless under a virtual display,
saving screenshots at chosen simulated times.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from experiments import results
from experiments.display import DisplayError, display
from experiments.replay_plan import Replay, ReplayError, plan
from experiments.runner import run_episode
from networks import scratch
from simulator import TrafficSimulation
from simulator.options import SimulationOptions
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


class GuiClosedError(RuntimeError):
    """sumo-gui went away (its window was closed) before the replay's end."""


@dataclass(frozen=True)
class ReplayResult:
    """What a replay measured and saved."""

    kpis: dict[str, float]
    """The episode's figures; over the whole horizon unless screenshots cut it short."""
    screenshots: tuple[Path, ...]
    """PNG files written, in the order of their times."""
    end: int
    """Simulated time at which the replay stopped."""


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
        step_s = target.options.decision_interval
        last = scenario.begin + math.ceil(times[-1] / step_s) * step_s
        scenario = dataclasses.replace(scenario, end=math.ceil(last + step_s))
        delay_ms = 0
    with scratch.temporary("replay") as tmp:
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
                options = SimulationOptions.of(
                    target.options, sumo_args=tuple(gui_args(settings, delay_ms=delay_ms)))
                result = run_episode(scenario, target.controller, target.seed, options,
                                     on_step=step, observer=camera, backend="traci", gui=True)
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
