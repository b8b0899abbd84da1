from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from networks import generators
from networks.errors import NetworkError
from networks.generators import grid
from networks.netinfo import read_net
from networks.registry import route_edges
from networks.scenario import Scenario
from networks.sumo_home import SumoError, sumo_home


@pytest.fixture(scope="module")
def grid23(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    return grid(2, 3, cache_dir=tmp_path_factory.mktemp("cache"))


def test_grid_files_are_in_the_cache_folder(grid23: Scenario) -> None:
    folder = grid23.net_file.parent
    assert grid23.name == "grid-2x3"
    assert folder.name == "grid-2x3" and folder.parent.name == "networks"
    assert grid23.net_file.name == "grid-2x3.net.xml"
    assert grid23.route_files == (folder / "grid-2x3.rou.xml",)
    assert (grid23.begin, grid23.end) == (0, 3600)
    # only the finished folder remains: no scratch folder, no duarouter leftovers
    assert sorted(p.name for p in folder.parent.iterdir()) == ["grid-2x3"]
    assert sorted(p.name for p in folder.iterdir()) == ["grid-2x3.net.xml", "grid-2x3.rou.xml"]


def test_grid_has_one_signal_per_crossing(grid23: Scenario) -> None:
    info = read_net(grid23.net_file)
    assert len(info.tls_ids) == 6
    for tls in info.tls_ids:
        program = info.programs[tls]
        assert program.kind == "static"
        assert sum(p.is_green for p in program.phases) >= 2
        assert any(p.is_yellow for p in program.phases)
        # four arms of two lanes: right, two straight and a left per arm
        assert len(info.incoming_lanes(tls)) == 8
        assert len(info.links[tls]) == 16


def test_grid_blocks_are_200_m(grid23: Scenario) -> None:
    lanes = read_net(grid23.net_file).lanes.values()
    # lanes end short of the junction boxes; every street and arm is about 200 m
    assert all(175 < lane.length <= 200 for lane in lanes)


def test_grid_demand_is_trips_within_the_horizon(grid23: Scenario) -> None:
    root = ET.parse(grid23.route_files[0]).getroot()
    trips = root.findall("trip")
    assert len(root) == len(trips)  # nothing but trips
    departs = [float(t.get("depart", "nan")) for t in trips]
    assert all(0 <= d < 3600 for d in departs)
    assert departs == sorted(departs)
    # 140 veh/h on each of the 10 outer arms (randomTrips rounds up), all kept by validation
    assert 1400 <= len(trips) <= 1401
    assert all(t.get("from") != t.get("to") for t in trips)


def test_grid_demand_uses_edges_of_the_net(grid23: Scenario) -> None:
    known = {lane.edge for lane in read_net(grid23.net_file).lanes.values()}
    used = route_edges(grid23.route_files[0])
    assert used
    assert used <= known


def test_second_call_uses_the_cache(grid23: Scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    mtimes = [p.stat().st_mtime_ns for p in (grid23.net_file, *grid23.route_files)]

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached grid ran a SUMO tool")

    monkeypatch.setattr(subprocess, "run", refuse)
    again = grid(2, 3, cache_dir=grid23.net_file.parents[2])
    assert again == grid23
    assert [p.stat().st_mtime_ns for p in (again.net_file, *again.route_files)] == mtimes


def test_grid_is_deterministic(grid23: Scenario, tmp_path: Path) -> None:
    other = grid(2, 3, cache_dir=tmp_path)
    assert other.net_file != grid23.net_file
    assert other.net_file.read_bytes() == grid23.net_file.read_bytes()
    assert other.route_files[0].read_bytes() == grid23.route_files[0].read_bytes()


def test_stale_cache_is_rebuilt(tmp_path: Path) -> None:
    first = grid(1, 1, cache_dir=tmp_path)
    good = first.route_files[0].read_bytes()
    first.route_files[0].write_text("<routes/>\n", encoding="utf-8")  # no recipe stamp
    again = grid(1, 1, cache_dir=tmp_path)
    assert again.route_files[0].read_bytes() == good
    assert sorted(p.name for p in (tmp_path / "networks").iterdir()) == ["grid-1x1"]


def test_default_cache_dir_follows_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GREENPHASE_CACHE", str(tmp_path))
    assert generators.default_cache_dir() == tmp_path
    scenario = grid(1, 1)
    assert scenario.net_file == tmp_path.resolve() / "networks" / "grid-1x1" / "grid-1x1.net.xml"
    assert read_net(scenario.net_file).tls_ids == ["A0"]
    monkeypatch.delenv("GREENPHASE_CACHE")
    assert generators.default_cache_dir() == Path.home() / ".cache" / "greenphase"


@pytest.mark.parametrize(
    ("rows", "cols", "bad"),
    [
        (0, 3, "0"),
        (3, 11, "11"),
        (-1, 2, "-1"),
        (2.0, 2, "2.0"),
        ("3", 3, "'3'"),
        (True, 2, "True"),
    ],
)
def test_bad_sizes_raise(rows: object, cols: object, bad: str, tmp_path: Path) -> None:
    with pytest.raises(NetworkError, match="from 1 to 10") as info:
        grid(rows, cols, cache_dir=tmp_path)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    assert message.endswith(f"got {bad}")
    assert not (tmp_path / "networks").exists()


def test_failed_tool_reports_its_last_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sumo

    fake = tmp_path / "sumo"
    (fake / "bin").mkdir(parents=True)
    tool = fake / "bin" / "netgenerate"
    tool.write_text("#!/bin/sh\necho 'Error: first' >&2\necho 'Error: grid too odd' >&2\nexit 1\n")
    tool.chmod(0o755)
    monkeypatch.setattr(sumo, "SUMO_HOME", str(fake))
    with pytest.raises(NetworkError, match=r"^netgenerate failed \(exit 1\): Error: grid too odd$"):
        grid(2, 2, cache_dir=tmp_path / "cache")
    # the scratch folder is gone and nothing half-built is cached
    assert list((tmp_path / "cache" / "networks").iterdir()) == []


def test_sumo_home_falls_back_to_the_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "sumo", None)  # no eclipse-sumo wheel: ImportError
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("SUMO_HOME", str(tmp_path))
    assert sumo_home() == tmp_path
    # the grid builder finds SUMO the same way: here a SUMO without netgenerate
    with pytest.raises(NetworkError, match="netgenerate"):
        grid(1, 2, cache_dir=tmp_path / "cache")
    monkeypatch.delenv("SUMO_HOME")
    with pytest.raises(SumoError, match="SUMO not found"):
        sumo_home()
    with pytest.raises(NetworkError, match="SUMO not found"):
        grid(1, 2, cache_dir=tmp_path / "cache")
