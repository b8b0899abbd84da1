import dataclasses
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table

from experiments.bench import (
    ALLOCATOR_ROW,
    GREENPHASE_SUMO_ROW,
    ROWS,
    BenchError,
    bench,
    format_table,
    rows,
)
from networks import Scenario
from networks.generators import grid


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    scenario = grid(1, 2, cache_dir=tmp_path_factory.mktemp("cache"))
    return dataclasses.replace(scenario, end=300)


@pytest.fixture(scope="module")
def result(tiny: Scenario) -> dict:
    lines: list[str] = []
    out = bench(tiny, repeats=1, progress=lines.append)
    out["_progress"] = lines
    return out


def test_rows_are_the_six_in_order(result: dict) -> None:
    names = [row["name"] for row in result["rows"]]
    assert [n for n in names if n != ALLOCATOR_ROW] == [
        "sumo",
        GREENPHASE_SUMO_ROW,
        "sumo-rl:fixed",
        "sumo-rl:random",
        "greenphase:fixed",
        "greenphase:max-pressure",
    ]
    assert tuple(n for n in names if n not in (ALLOCATOR_ROW, GREENPHASE_SUMO_ROW)) == ROWS
    assert tuple(names) == rows()


def test_greenphase_rows_are_broken_down_against_sumo_on_their_own_command(
    result: dict, tiny: Scenario
) -> None:
    from simulator.env import TrafficSignalEnv

    walls = {row["name"]: row for row in result["rows"]}
    for name, row in walls.items():
        if name.startswith("greenphase:"):
            assert row["own_s"] == pytest.approx(
                row["wall_s"] - walls[GREENPHASE_SUMO_ROW]["wall_s"])
        else:
            assert row["own_s"] is None
    # the row runs greenphase's command: its detectors and its complete trip output
    env = TrafficSignalEnv(tiny, program="static")
    try:
        command = env.sim.sumo_command(0)
    finally:
        env.close()
    assert "--tripinfo-output.write-unfinished" in command and "-a" in command


def test_the_allocator_row_is_there_exactly_when_greenphase_uses_the_allocator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from simulator import isolation

    plain = ("sumo", GREENPHASE_SUMO_ROW, *ROWS[1:])
    monkeypatch.setenv("GREENPHASE_ALLOCATOR", "system")
    assert rows() == plain
    monkeypatch.setenv("GREENPHASE_ALLOCATOR", "tcmalloc")
    monkeypatch.setattr(isolation, "_find_tcmalloc", lambda: "libtcmalloc_minimal.so.4")
    assert rows() == ("sumo", ALLOCATOR_ROW, GREENPHASE_SUMO_ROW, *ROWS[1:])
    monkeypatch.setattr(isolation, "_find_tcmalloc", lambda: None)
    assert rows() == plain


def test_header(result: dict, tiny: Scenario) -> None:
    assert result["network"] == "grid-1x2"
    assert (result["begin_s"], result["end_s"], result["repeats"]) == (0, 300, 1)


def test_walls_and_ratios(result: dict) -> None:
    rows = result["rows"]
    sumo = rows[0]
    assert sumo["ratio_to_sumo"] == 1.0
    for row in rows:
        assert row["wall_s"] > 0
        assert len(row["walls_s"]) == 1
        assert row["wall_s"] == row["walls_s"][0]
        assert row["ratio_to_sumo"] == pytest.approx(row["wall_s"] / sumo["wall_s"])


def test_progress_reports_every_episode(result: dict) -> None:
    lines = result["_progress"]
    assert len(lines) == len(result["rows"])
    assert all(row["name"] in line for row, line in zip(result["rows"], lines, strict=True))


def test_json_serialisable(result: dict) -> None:
    clean = {k: v for k, v in result.items() if not k.startswith("_")}
    assert json.loads(json.dumps(clean)) == clean


def test_format_table(result: dict) -> None:
    table = format_table(result)
    assert isinstance(table, Table)
    assert [c.header for c in table.columns] == ["name", "wall s", "ratio to SUMO",
                                                 f"beyond {GREENPHASE_SUMO_ROW} s"]
    console = Console(width=120, record=True)
    console.print(table)
    text = console.export_text()
    for row in result["rows"]:
        assert row["name"] in text


def test_interleaved_repeats_and_median(tiny: Scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    from experiments import bench as mod

    calls: list[str] = []
    scripted = {
        row: iter(walls)
        for row, walls in zip(
            (*ROWS, GREENPHASE_SUMO_ROW),
            ([2.0, 1.0, 3.0], [1.0, 5.0, 2.0], [4.0, 4.0, 4.0], [1.0, 1.0, 9.0], [3.0, 2.0, 1.0],
             [0.5, 0.5, 0.5]),
            strict=True,
        )
    }

    def fake(row: str) -> float:
        calls.append(row)
        return next(scripted[row])

    monkeypatch.setenv("GREENPHASE_ALLOCATOR", "system")
    monkeypatch.setattr(mod, "_time_sumo", lambda scenario, row: fake(row))
    monkeypatch.setattr(mod, "_time_in_worker", lambda row, scenario: fake(row))
    out = bench(tiny, repeats=3)
    assert calls == ["sumo", GREENPHASE_SUMO_ROW, *ROWS[1:]] * 3
    medians = {row["name"]: row["wall_s"] for row in out["rows"]}
    assert medians == {
        "sumo": 2.0,
        GREENPHASE_SUMO_ROW: 0.5,
        "sumo-rl:fixed": 2.0,
        "sumo-rl:random": 4.0,
        "greenphase:fixed": 1.0,
        "greenphase:max-pressure": 2.0,
    }
    ratios = {row["name"]: row["ratio_to_sumo"] for row in out["rows"]}
    assert ratios["sumo-rl:random"] == 2.0
    assert {row["name"]: row["own_s"] for row in out["rows"]}["greenphase:fixed"] == 0.5
    assert out["rows"][0]["walls_s"] == [2.0, 1.0, 3.0]


def test_repeats_must_be_positive(tiny: Scenario) -> None:
    with pytest.raises(ValueError, match="repeats"):
        bench(tiny, repeats=0)


def test_failing_row_raises(tiny: Scenario, tmp_path: Path) -> None:
    broken = dataclasses.replace(tiny, route_files=(tmp_path / "missing.rou.xml",))
    with pytest.raises(BenchError, match="sumo"):
        bench(broken, repeats=1)


def test_failing_worker_names_the_row(tiny: Scenario, tmp_path: Path) -> None:
    from experiments.bench import _time_in_worker

    broken = dataclasses.replace(tiny, net_file=tmp_path / "missing.net.xml")
    with pytest.raises(BenchError, match="greenphase:fixed"):
        _time_in_worker("greenphase:fixed", broken)


def test_a_sumo_rl_row_refuses_to_run_over_traci_sockets(tiny: Scenario) -> None:
    # traci imported before sumo-rl asks for libsumo: the row would time sockets instead
    code = ("import pickle, sys; import traci; from experiments.bench import sumo_rl_env\n"
            "try:\n    sumo_rl_env(pickle.loads(sys.stdin.buffer.read()))\n"
            "except Exception as err:\n    print(type(err).__name__, err)\n")
    env = {k: v for k, v in os.environ.items() if k != "LIBSUMO_AS_TRACI"}  # plain traci
    out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(tiny), env=env,
                         capture_output=True, check=True).stdout.decode()
    assert "BenchError sumo-rl is not running on libsumo" in out
