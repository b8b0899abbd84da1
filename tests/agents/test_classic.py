"""Classic controllers under faulty sensors: a missing reading (NaN) counts as no vehicle."""

from __future__ import annotations

import numpy as np

from agents.classic import SOTL, MaxPressure
from simulator.intersection import Layout
from simulator.sensors import Readings
from simulator.view import SignalView


def crossing() -> SignalView:
    """Two phases: phase 0 serves incoming lane 0, phase 1 incoming lane 1; both exit on 2."""
    layout = Layout(tls_id="t", green_states=("Gr", "rG"), incoming_lanes=("a", "b"),
                    outgoing_lanes=("x",), movements=(((0, 0),), ((1, 0),)), min_green=5.0,
                    max_green=50.0, yellow=3.0, all_red=0.0)
    return SignalView(layout, np.array([0, 1]), np.array([2]), np.full(2, 10.0),
                      np.full(1, 10.0), np.full(2, 10.0), green=0, time_in_phase=30.0)


def readings(count: list[float]) -> Readings:
    n = len(count)
    return Readings(0.0, np.zeros(n), np.zeros(n), np.full(n, np.nan), np.array(count),
                    np.zeros(n))


def test_max_pressure_reads_a_missing_count_as_zero() -> None:
    views = [crossing()]
    ctrl = MaxPressure()
    ctrl.reset(views, 0)
    assert ctrl.act(views, readings([np.nan, 6.0, 1.0]), 5.0).tolist() == [1]
    assert ctrl.act(views, readings([6.0, np.nan, np.nan]), 5.0).tolist() == [0]


def test_sotl_reads_a_missing_count_as_zero() -> None:
    views = [crossing()]
    ctrl = SOTL(theta=20.0)
    ctrl.reset(views, 0)
    # the red lane is missing: nothing is counted waiting, the green stays
    for _ in range(5):
        assert ctrl.act(views, readings([0.0, np.nan, 0.0]), 5.0).tolist() == [0]
    assert ctrl.act(views, readings([0.0, 8.0, np.nan]), 5.0).tolist() == [1]
