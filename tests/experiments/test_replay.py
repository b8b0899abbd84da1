"""Replays in sumo-gui: the figures of the run replayed, screenshots with vehicles, clear errors."""

from __future__ import annotations

import dataclasses
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from matplotlib import image as mpimg
from typer.testing import CliRunner

from agents.dqn import DQNConfig
from agents.optim import OptimConfig
from experiments import display
from experiments.cli import app
from experiments.replay import (
    WAITING_TIME_MODE,
    ReplayError,
    gui_settings,
    plan,
    replay,
    screenshot_paths,
)
from experiments.runner import run_episode
from experiments.train import TrainSpec, train
from networks import Scenario
from tests.conftest import assert_bad_input

runner = CliRunner()

needs_display = pytest.mark.skipif(
    not display.available(),
    reason="sumo-gui needs a display: $DISPLAY is unset and Xvfb is not installed "
           "(apt-get install xvfb; `make test` does it)",
)


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def tiny(grid1x1: Scenario) -> Scenario:
    """One signal, five simulated minutes."""
    return dataclasses.replace(grid1x1, end=300)


def net_args(sc: Scenario) -> list[str]:
    return ["--net", str(sc.net_file), "--routes", str(sc.route_files[0]),
            "--end", str(sc.end)]


@pytest.fixture(scope="module")
def trained_run(tiny: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = TrainSpec(algo="dqn", episodes=1, eval_every=1, hidden=(8,),
                     dqn=DQNConfig(learning_starts=20, target_every=10, buffer_size=200),
                     optim=OptimConfig(batch_size=8))
    return train(spec, tiny, tmp_path_factory.mktemp("replay") / "trained").run


@pytest.fixture(scope="module")
def compared(tiny: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("replay") / "compared"
    result = invoke("compare", *net_args(tiny), "-c", "max-pressure", "--seeds", "1",
                    "--json", "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def no_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)


def vehicle_pixels(png: Path) -> tuple[float, int]:
    """Share of pixels that are not the white background, and pixels of moving-vehicle green.

    The left fifth (the colour legend) is left out.
    """
    img = mpimg.imread(png)[..., :3]
    img = img[:, img.shape[1] // 5 :]
    drawn = float((img.min(axis=2) < 0.9).mean())
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    green = int(((r < 0.2) & (g > 0.5) & (g < 0.8) & (b < 0.2)).sum())  # 0,170,0: no wait
    return drawn, green


# ------------------------------------------------------------------ planning
def test_a_training_run_replays_its_policy_on_its_network(trained_run: Path,
                                                          tiny: Scenario) -> None:
    target = plan(trained_run)
    assert target.controller == f"trained:{trained_run}"
    assert target.scenario.net_file.resolve() == tiny.net_file.resolve()
    assert (target.scenario.begin, target.scenario.end) == (0, 300)
    assert target.seed == 0 and target.options.decision_interval == 5.0


def test_a_compare_folder_replays_the_chosen_controller(compared: Path) -> None:
    target = plan(compared, controller="max-pressure")
    assert target.controller == "max-pressure"
    assert target.measured is not None and target.measured["mean_delay_s"] > 0
    assert plan(compared, controller="max-pressure", seed=7).measured is None
    assert plan(compared, controller="max-pressure", end=200).measured is None


def test_gui_settings_colour_vehicles_by_waiting_time_and_frame_the_net(tiny: Scenario) -> None:
    root = ET.fromstring(gui_settings(tiny.net_file, delay_ms=20))
    vehicles = root.find("scheme/vehicles")
    assert vehicles is not None and vehicles.get("vehicleMode") == str(WAITING_TIME_MODE)
    scheme = vehicles.find("colorScheme")
    assert scheme is not None and scheme.get("name") == "by waiting time"
    assert [float(e.get("threshold", -1)) for e in scheme] == sorted(
        float(e.get("threshold", -1)) for e in scheme)
    location = ET.parse(tiny.net_file).getroot().find("location")
    assert location is not None
    xmin, ymin, xmax, ymax = map(float, location.get("convBoundary", "").split(","))
    viewport = root.find("viewport")
    assert viewport is not None
    assert xmin <= float(viewport.get("x", "nan")) <= xmax
    assert ymin <= float(viewport.get("y", "nan")) <= ymax
    delay = root.find("delay")
    assert delay is not None and delay.get("value") == "20"


def test_several_screenshot_times_get_one_file_each(tmp_path: Path) -> None:
    assert screenshot_paths(tmp_path / "a.png", [600]) == [tmp_path / "a.png"]
    assert screenshot_paths(tmp_path / "a.png", [60, 120.5]) == [
        tmp_path / "a-60s.png", tmp_path / "a-120.5s.png"]


# ------------------------------------------------------------------ the GUI
@pytest.mark.gui
@needs_display
def test_a_replay_has_the_figures_of_the_run_it_replays(compared: Path) -> None:
    target = plan(compared, controller="max-pressure")
    with display.display():
        result = replay(target, delay_ms=0)
    assert target.measured is not None
    assert result.kpis == pytest.approx(target.measured, rel=0, abs=0)
    assert result.screenshots == () and result.end == 300


@pytest.mark.gui
@needs_display
@pytest.mark.parametrize("controller", ["fixed", "trained"])
def test_replay_equals_the_headless_run(controller: str, tiny: Scenario,
                                        trained_run: Path) -> None:
    name = f"trained:{trained_run}" if controller == "trained" else controller
    headless = run_episode(tiny, name, 3)
    with display.display():
        replayed = replay(plan(None, scenario=tiny, controller=name, seed=3), delay_ms=0)
    assert replayed.kpis == headless.kpis


@pytest.mark.gui
@needs_display
def test_screenshot_of_a_trained_run_shows_the_network_with_vehicles(
    trained_run: Path, tmp_path: Path, no_display: None
) -> None:
    shot = tmp_path / "shot.png"
    result = invoke("replay", trained_run, "--screenshot", shot, "--at", "150")
    assert result.exit_code == 0, result.output
    assert f"screenshot: {shot}" in result.stdout
    drawn, green = vehicle_pixels(shot)
    assert drawn > 0.01, "the picture is blank"
    assert green > 20, "no vehicles coloured by waiting time"
    assert "DISPLAY" not in os.environ  # the virtual display is gone with the replay


@pytest.mark.gui
@needs_display
def test_screenshots_of_a_named_controller_at_several_times(
    tiny: Scenario, tmp_path: Path, no_display: None
) -> None:
    shot = tmp_path / "mp.png"
    result = invoke("replay", *net_args(tiny), "--controller", "max-pressure",
                    "--screenshot", shot, "--at", "60", "--at", "240")
    assert result.exit_code == 0, result.output
    for path in (tmp_path / "mp-60s.png", tmp_path / "mp-240s.png"):
        drawn, green = vehicle_pixels(path)
        assert drawn > 0.01 and green > 0, path
    assert not shot.exists()


@pytest.mark.gui
@needs_display
def test_the_virtual_display_starts_and_stops(no_display: None) -> None:
    with display.display() as name:
        assert os.environ["DISPLAY"] == name
        assert (display.X11_SOCKETS / f"X{name.lstrip(':')}").exists()
    assert "DISPLAY" not in os.environ
    assert not (display.X11_SOCKETS / f"X{name.lstrip(':')}").exists()


def test_an_existing_display_is_used_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", ":42")
    monkeypatch.setattr(display, "xvfb_binary", lambda: pytest.fail("Xvfb started"))
    with display.display() as name:
        assert name == ":42"
    assert os.environ["DISPLAY"] == ":42"


# ------------------------------------------------------------------ bad input
def test_a_folder_without_a_controller(tmp_path: Path) -> None:
    assert_bad_input(invoke("replay", tmp_path), str(tmp_path), "no controller")
    assert_bad_input(invoke("replay", tmp_path / "missing"), "not found")
    assert_bad_input(invoke("replay"), "--network", "--controller")
    assert_bad_input(invoke("replay", "--network", "cologne1"), "--controller")


def test_a_compare_folder_needs_one_of_its_controllers(compared: Path) -> None:
    assert_bad_input(invoke("replay", compared), "fixed, max-pressure", "--controller")
    assert_bad_input(invoke("replay", compared, "-c", "sotl"), "'sotl'", "fixed, max-pressure")


def test_a_network_that_is_not_the_runs(trained_run: Path, compared: Path) -> None:
    assert_bad_input(invoke("replay", trained_run, "--network", "cologne1"),
                     "'grid-1x1'", "'cologne1'")
    assert_bad_input(invoke("replay", compared, "-c", "fixed", "--network", "cologne1"),
                     "'cologne1'")
    with pytest.raises(ReplayError):
        plan(compared, controller="fixed", begin=400)  # begin after the end


def test_no_gui_binary(tiny: Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bin").mkdir()
    monkeypatch.setattr("simulator.sumo.sumo_home", lambda: tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    result = invoke("replay", *net_args(tiny), "-c", "fixed", "--screenshot",
                    tmp_path / "x.png")
    assert_bad_input(result, "sumo-gui")


def test_no_display_and_no_xvfb(tiny: Scenario, tmp_path: Path, no_display: None,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no Xvfb on it; SUMO comes from its package
    assert_bad_input(invoke("replay", *net_args(tiny), "-c", "fixed", "--screenshot",
                            tmp_path / "x.png"), "Xvfb")
    assert_bad_input(invoke("replay", *net_args(tiny), "-c", "fixed"), "--screenshot")


def test_screenshot_times_outside_the_horizon(tiny: Scenario, tmp_path: Path) -> None:
    assert_bad_input(invoke("replay", *net_args(tiny), "-c", "fixed", "--screenshot",
                            tmp_path / "x.png", "--at", "301"), "--at 301", "300")
    assert_bad_input(invoke("replay", *net_args(tiny), "-c", "fixed", "--at", "60"),
                     "--screenshot")
    assert_bad_input(invoke("replay", *net_args(tiny), "-c", "nonsense", "--screenshot",
                            tmp_path / "x.png"), "nonsense")
