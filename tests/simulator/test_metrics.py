"""The delay metric charges every vehicle due in the horizon, inserted or not."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

import numpy as np
import pytest

from agents import Controller
from experiments.runner import run_episode
from networks import Scenario
from simulator.metrics import kpis, read_tripinfo
from simulator.options import SimulationOptions
from simulator.sensors import Readings
from simulator.view import SignalView


class HoldFirstPhase(Controller):
    """Never lets the first green go: the other approaches fill up and back up outside."""

    name = "hold"

    def act(self, views: Sequence[SignalView], readings: Readings, dt: float) -> np.ndarray:
        return np.zeros(len(views), dtype=np.int64)


def scheduled_departures(scenario: Scenario) -> dict[str, float]:
    return {
        e.get("id", ""): float(e.get("depart", 0))
        for path in scenario.route_files
        for e in ET.parse(path).getroot()
        if e.tag in ("trip", "vehicle")
    }


def test_vehicles_held_outside_the_network_are_charged(grid1x1: Scenario) -> None:
    # max_green so long that the held green is never forced to end
    held = run_episode(grid1x1, HoldFirstPhase(), 0, SimulationOptions(max_green=1e9))
    trips = held.trips
    outside = trips[~trips["inserted"]]
    assert held.kpis["not_inserted"] == len(outside) > 20

    # each never-inserted vehicle is charged from its scheduled departure to the end
    depart = scheduled_departures(grid1x1)
    expected = np.array([grid1x1.end - depart[v] for v in outside["vehicle"]])
    assert np.allclose(outside["delay_s"].to_numpy(), expected, atol=1.0)

    # and they are in the mean: leaving them out would flatter the controller
    inserted_only = trips[trips["inserted"]]["delay_s"].mean()
    assert held.kpis["mean_delay_s"] == pytest.approx(trips["delay_s"].mean())
    assert held.kpis["mean_delay_s"] > inserted_only
    assert held.kpis["vehicles"] == sum(
        grid1x1.begin <= d < grid1x1.end for d in depart.values()
    )

    fixed = run_episode(grid1x1, "fixed", seed=0)
    assert fixed.kpis["not_inserted"] < held.kpis["not_inserted"]
    assert fixed.kpis["mean_delay_s"] < held.kpis["mean_delay_s"]


def test_unfinished_vehicles_count_with_their_delay_so_far(grid1x1: Scenario) -> None:
    result = run_episode(grid1x1, "fixed", seed=0)
    running = result.trips[result.trips["inserted"] & ~result.trips["arrived"]]
    assert len(running) == result.kpis["unfinished"] > 0
    assert (running["travel_time_s"] > 0).all()
    assert result.kpis["throughput_veh_h"] == pytest.approx(
        result.trips["arrived"].sum() * 3600 / grid1x1.horizon_s
    )


def test_kpis_of_a_hand_written_tripinfo(tmp_path) -> None:
    path = tmp_path / "tripinfo.xml"
    path.write_text(
        "<tripinfos>\n"
        '<tripinfo id="a" depart="10.00" departDelay="2.00" arrival="70.00" duration="60.00"'
        ' timeLoss="20.00" waitingTime="5.00" routeLength="500"/>\n'
        '<tripinfo id="b" depart="50.00" departDelay="0.00" arrival="-1.00" duration="50.00"'
        ' timeLoss="30.00" waitingTime="10.00" routeLength="100"/>\n'
        '<tripinfo id="c" depart="-1" departDelay="40.00" arrival="-1.00" duration="0.00"'
        ' timeLoss="0.00" waitingTime="0.00" routeLength="0"/>\n'
        "</tripinfos>\n"
    )
    trips = read_tripinfo(path)
    k = kpis(trips, horizon_s=100, queue=[1.0, 3.0])
    assert k["mean_delay_s"] == pytest.approx((22 + 30 + 40) / 3)
    assert k["mean_travel_time_s"] == pytest.approx((62 + 50 + 40) / 3)
    assert k["mean_waiting_time_s"] == pytest.approx(5.0)
    assert k["throughput_veh_h"] == pytest.approx(36.0)
    assert k["mean_queue_veh"] == 2.0
    assert (k["vehicles"], k["unfinished"], k["not_inserted"]) == (3, 1, 1)


def test_fast_tripinfo_reading_equals_a_full_xml_parse(grid1x1: Scenario, tmp_path) -> None:
    import subprocess

    import pandas as pd

    from simulator.metrics import _COLUMNS, TRIPINFO_OPTIONS, _rows_fast, _rows_parsed
    from simulator.sumo import sumo_binary

    out = tmp_path / "tripinfo.xml"
    subprocess.run(
        [sumo_binary(), "-n", str(grid1x1.net_file), "-r", str(grid1x1.route_files[0]),
         "-b", "0", "-e", "900", "--tripinfo-output", str(out), *TRIPINFO_OPTIONS,
         "--no-step-log", "true"],
        check=True, capture_output=True,
    )
    assert _rows_fast(out.read_bytes()) is not None  # SUMO's own order takes the fast path
    fast = read_tripinfo(out)
    parsed = pd.DataFrame(_rows_parsed(out), columns=_COLUMNS)
    parsed[_COLUMNS[1:]] = parsed[_COLUMNS[1:]].astype(float)
    parsed = parsed[parsed["depart_delay_s"] >= 0].reset_index(drop=True)
    assert len(fast) > 100 and (~fast["arrived"]).any()
    pd.testing.assert_frame_equal(fast[_COLUMNS], parsed)
