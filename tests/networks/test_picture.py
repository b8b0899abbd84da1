"""Pictures of networks: roads drawn, signals marked, written atomically, bad input refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib import image as mpimg
from typer.testing import CliRunner

import networks
from experiments.cli import app
from networks import NetworkError, Scenario
from networks.picture import draw, short_id

runner = CliRunner()


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def assert_bad_input(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def shares(png: Path) -> tuple[float, float]:
    """Share of drawn (non-white) pixels, and of the signal markers' red."""
    img = mpimg.imread(png)[..., :3]
    drawn = float((img.min(axis=2) < 0.9).mean())
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    red = float(((r > 0.7) & (g < 0.3) & (b < 0.3)).mean())
    return drawn, red


def test_a_grid_is_drawn_with_its_signal_marked(grid1x1: Scenario, tmp_path: Path) -> None:
    png = draw(grid1x1.net_file, tmp_path / "sub" / "grid.png")
    assert png == tmp_path / "sub" / "grid.png"
    drawn, red = shares(png)
    assert drawn > 0.002 and red > 0
    assert [p.name for p in png.parent.iterdir()] == ["grid.png"]  # no temporary file left


def test_long_signal_ids_are_shortened() -> None:
    assert short_id("A0") == "A0"
    label = short_id("cluster_1098574052_1098574061_247379905")
    assert len(label) == 14 and label.endswith("…") and label.startswith("cluster_1098")


def test_networks_show_draws_a_registered_network(tmp_path: Path) -> None:
    result = invoke("networks", "show", "cologne1", "--png", tmp_path / "c1.png")
    assert result.exit_code == 0, result.output
    assert "c1.png" in result.stdout
    drawn, red = shares(tmp_path / "c1.png")
    assert drawn > 0.002 and red > 0


def test_networks_show_draws_a_user_net(grid2x2_short: Scenario, tmp_path: Path) -> None:
    result = invoke("networks", "show", "--net", grid2x2_short.net_file, "--png",
                    tmp_path / "g.png")
    assert result.exit_code == 0, result.output
    assert shares(tmp_path / "g.png")[1] > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in networks.names() if not n.startswith("grid-")])
def test_every_registered_network_can_be_drawn(name: str, tmp_path: Path) -> None:
    png = draw(networks.get(name).net_file, tmp_path / f"{name}.png")
    drawn, red = shares(png)
    assert drawn > 0.002 and red > 0


def test_bad_input_is_one_line(tmp_path: Path, grid1x1: Scenario) -> None:
    broken = tmp_path / "broken.net.xml"
    broken.write_text("<net><edge")
    assert_bad_input(invoke("networks", "show", "--net", broken, "--png", tmp_path / "x.png"),
                     "broken.net.xml")
    assert_bad_input(invoke("networks", "show", "nowhere", "--png", tmp_path / "x.png"),
                     "nowhere")
    assert_bad_input(invoke("networks", "show", "cologne1", "--net", grid1x1.net_file,
                            "--png", tmp_path / "x.png"), "--net")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_bad_input(invoke("networks", "show", "--net", grid1x1.net_file, "--png",
                            blocker / "x.png"), "cannot write")
    with pytest.raises(NetworkError):
        draw(tmp_path / "missing.net.xml", tmp_path / "x.png")
    assert invoke("networks", "show", "cologne1").exit_code == 2  # --png is required
