"""Cleaning: imputation of missing readings, missing flags in the observation, the builder."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from experiments.runner import run_episode
from networks import Scenario
from simulator.cleaning import (
    CleanedSensors,
    CleaningError,
    CleanReadings,
    MissingFlags,
    missing_of,
    sensor_model,
)
from simulator.faults import FaultConfigError, FaultySensors
from simulator.intersection import Layout
from simulator.observations import PressureObservation, QueueObservation
from simulator.options import SimulationOptions
from simulator.sensors import Detectors, Readings, SensorModel
from simulator.view import SignalView

NAN = np.nan


def detectors() -> Detectors:
    """Two entry detectors and one exit detector."""
    return Detectors(("a", "b", "x"), ("a", "b", "x"), np.full(3, 75.0), np.full(3, 10.0),
                     np.array([True, True, False]))


def reading(count: list[float], queue: list[float] | None = None) -> Readings:
    count_ = np.array(count, dtype=float)
    queue_ = np.array(queue if queue is not None else [c / 2 for c in count[:2]] + [NAN])
    speed = np.where(np.isnan(count_), NAN, 5.0)
    speed[2] = NAN
    occupancy = np.where(np.isnan(count_), NAN, 10.0 * count_)
    occupancy[2] = NAN
    return Readings(0.0, queue_, occupancy, speed, count_, np.zeros(3))


class Scripted(SensorModel):
    """Delivers a prepared sequence of readings, whatever SUMO measured."""

    def __init__(self, script: list[Readings]) -> None:
        self.script = script

    def reset(self, detectors: Detectors, seed: int | None) -> None:
        self._next = iter(self.script)

    def observe(self, readings: Readings) -> Readings:
        return next(self._next)


def cleaned(imputation: str, script: list[Readings]) -> list[CleanReadings]:
    model = CleanedSensors(Scripted(script), imputation)
    model.reset(detectors(), 0)
    return [model.observe(r) for r in script]


def test_last_carries_the_last_good_reading_and_starts_empty() -> None:
    script = [reading([NAN, 4, 1]), reading([2, NAN, 1]), reading([NAN, NAN, NAN]),
              reading([6, 8, NAN])]
    out = cleaned("last", script)
    assert [list(r.count) for r in out] == [[0, 4, 1], [2, 4, 1], [2, 4, 1], [6, 8, 1]]
    assert [list(r.queue[:2]) for r in out] == [[0, 2], [1, 2], [1, 2], [3, 4]]
    # a detector with no reading yet reads empty: no vehicles, no mean speed
    assert np.isnan(out[0].speed[0]) and out[0].occupancy[0] == 0
    assert out[2].occupancy[0] == 20 and out[2].speed[0] == 5.0
    assert [list(r.missing) for r in out] == [
        [True, False, False], [False, True, False], [True, True, True], [False, False, True]]


def test_zero_flag_reads_missing_detectors_as_empty_and_flags_them() -> None:
    out = cleaned("zero-flag", [reading([3, 4, 1]), reading([NAN, 4, NAN])])
    assert list(out[1].count) == [0, 4, 0]
    assert out[1].queue[0] == 0 and out[1].occupancy[0] == 0 and np.isnan(out[1].speed[0])
    assert list(out[1].missing) == [True, False, True]
    assert not out[0].missing.any()


def test_cleaning_after_faults_leaves_no_missing_count_and_flags_what_was_lost() -> None:
    det = Detectors(tuple("abcdefgh"), tuple("abcdefgh"), np.full(8, 75.0), np.full(8, 10.0),
                    np.ones(8, dtype=bool))
    faulty, model = FaultySensors("dropout=0.4"), CleanedSensors(FaultySensors("dropout=0.4"))
    faulty.reset(det, 5)
    model.reset(det, 5)
    flagged = 0
    for t in range(200):
        r = Readings(float(t), np.full(8, 1.0), np.full(8, 5.0), np.full(8, 3.0),
                     np.full(8, 2.0 + t), np.zeros(8))
        lost = np.isnan(faulty.observe(r).count)
        out = model.observe(r)
        assert not np.isnan(out.count).any()
        np.testing.assert_array_equal(out.missing, lost)
        flagged += int(lost.sum())
    assert flagged / 1600 == pytest.approx(0.4, abs=0.05)


def signal_view() -> SignalView:
    """One signal with two incoming lanes (detectors 0, 1) and one outgoing (detector 2)."""
    layout = Layout(tls_id="t", green_states=("GG", "rr"), incoming_lanes=("a", "b"),
                    outgoing_lanes=("x",), movements=(((0, 0), (1, 0)), ()), min_green=5.0,
                    max_green=50.0, yellow=3.0, all_red=0.0)
    return SignalView(layout, np.array([0, 1]), np.array([2]), np.full(2, 10.0),
                      np.full(1, 10.0), np.full(2, 10.0))


def test_missing_flags_append_one_flag_per_lane_and_read_nan_as_zero() -> None:
    v = signal_view()
    flags = MissingFlags(QueueObservation())
    assert flags.space(v).shape[0] == QueueObservation().space(v).shape[0] + 2
    raw = reading([NAN, 4, 1])  # no cleaning: the flags come from the NaN counts
    obs = flags.observe_all([v], raw)
    assert not np.isnan(obs).any()
    np.testing.assert_array_equal(obs[-2:], [1.0, 0.0])
    clean = cleaned("zero-flag", [raw])[0]
    np.testing.assert_array_equal(flags.observe_all([v], clean), obs)
    assert flags.space(v).contains(obs)
    pressure = MissingFlags(PressureObservation())
    assert pressure.needs_exits
    assert pressure.space(v).shape[0] == PressureObservation().space(v).shape[0] + 3
    np.testing.assert_array_equal(missing_of(raw), [True, False, False])


def test_sensor_model_builds_the_chain_and_refuses_bad_names() -> None:
    assert type(sensor_model()) is SensorModel
    assert type(sensor_model("dropout=0.1")) is FaultySensors
    model = sensor_model("dropout=0.1", "zero-flag")
    assert isinstance(model, CleanedSensors) and isinstance(model.inner, FaultySensors)
    assert type(sensor_model("", "last").inner) is SensorModel  # type: ignore[attr-defined]
    pickle.loads(pickle.dumps(model))
    with pytest.raises(CleaningError, match="unknown cleaning 'mop'"):
        sensor_model("", "mop")
    with pytest.raises(FaultConfigError, match="dropout"):
        sensor_model("dropout=1.5", "last")


def test_cleaned_runs_in_sumo_and_are_reproducible(grid2x2_short: Scenario) -> None:
    runs = [
        run_episode(grid2x2_short, "max-pressure", 0,
                    SimulationOptions(faults="dropout=0.3,noise=0.1", cleaning="last"))
        for _ in range(2)
    ]
    assert runs[0].kpis == runs[1].kpis and runs[0].kpis["vehicles"] > 0
