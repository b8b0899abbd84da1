"""Observation and reward functions against reference computations from their definitions."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest

from networks import Scenario
from simulator.core import TrafficSimulation
from simulator.observations import (
    ObservationFunction,
    PressureObservation,
    QueueExitObservation,
    QueueObservation,
)
from simulator.rewards import (
    DelayReward,
    PressureReward,
    QueueReward,
    RewardFunction,
    WaitingTimeReward,
)
from simulator.sensors import Readings
from simulator.view import VEHICLE_SPACE_M, SignalView


@pytest.fixture(params=["grid22", "cologne1"])
def recorded(request: pytest.FixtureRequest) -> Iterator[tuple[TrafficSimulation, list[Snapshot]]]:
    """An episode under random greens: the simulation and a snapshot at each decision step."""
    sim = TrafficSimulation(request.getfixturevalue(request.param))
    try:
        yield sim, record(sim)
    finally:
        sim.close()


@pytest.fixture(scope="module")
def with_exits(grid22: Scenario) -> tuple[TrafficSimulation, list[Snapshot]]:
    """:func:`recorded` on the grid with exit detectors, as pressure needs (closed)."""
    sim = TrafficSimulation(grid22, exit_detectors=True)
    try:
        return sim, record(sim)
    finally:
        sim.close()


@dataclasses.dataclass
class Snapshot:
    readings: Readings
    greens: list[int]
    times_in_phase: list[float]
    dt: float

    def apply(self, views: list[SignalView]) -> None:
        """Put the views back in the state they had at this step."""
        for v, g, t in zip(views, self.greens, self.times_in_phase, strict=True):
            v.green, v.time_in_phase = g, t


def record(sim: TrafficSimulation) -> list[Snapshot]:
    rng = np.random.default_rng(5)
    phases = [v.layout.num_phases for v in sim.views]

    def snap(readings: Readings, dt: float) -> Snapshot:
        views = sim.views
        return Snapshot(readings, [v.green for v in views], [v.time_in_phase for v in views], dt)

    out = [snap(sim.start(3), 0.0)]
    while not sim.done:
        before = sim.time
        readings = sim.step(rng.integers(0, phases))
        out.append(snap(readings, sim.time - before))
    return out


def replayed(sim: TrafficSimulation, snaps: list[Snapshot]) -> Iterator[Snapshot]:
    """Each snapshot, with the simulation's views put back in its state first."""
    for snap in snaps:
        snap.apply(sim.views)
        yield snap


# --------------------------------------------------------------------- references
def queue_reference(sim: TrafficSimulation, view: SignalView, r: Readings) -> np.ndarray:
    """QueueObservation from its definition, for one intersection."""
    det = sim.detectors
    entry = [
        next(
            i
            for i, (d, e) in enumerate(zip(det.lanes, det.is_entry, strict=True))
            if d == lane and e
        )
        for lane in view.layout.incoming_lanes
    ]
    assert list(view.entry) == entry
    one_hot = np.zeros(view.layout.num_phases)
    one_hot[view.green] = 1.0
    capacity = np.maximum(det.lengths[entry] / VEHICLE_SPACE_M, 1.0)
    speed = r.speed[entry] / det.speed_limits[entry]
    speed = np.where(np.isnan(speed), 1.0, speed)  # an empty lane flows freely
    values = np.concatenate(
        (
            one_hot,
            [view.time_in_phase / view.layout.max_green],
            r.queue[entry] / capacity,
            r.occupancy[entry] / 100.0,
            speed,
        )
    )
    return np.clip(values, 0.0, 1.0)


def entry_reference(reward: RewardFunction, view: SignalView, r: Readings, dt: float) -> float:
    """The entry-lane rewards from their definitions, for one intersection."""
    e = view.entry
    if isinstance(reward, QueueReward):
        return -float(r.queue[e].sum())
    if isinstance(reward, WaitingTimeReward):
        return -float(r.queue[e].sum() * dt)
    assert isinstance(reward, DelayReward)
    relative = np.nan_to_num(r.speed[e] / view.entry_speed_limit, nan=1.0)
    return -float((r.count[e] * np.clip(1.0 - relative, 0.0, 1.0) * dt).sum())


def exaggerated(r: Readings) -> Readings:
    """Readings beyond the normal ranges, to exercise the clipping."""
    return r.with_values(queue=r.queue * 50 + 1, speed=r.speed * 3, occupancy=r.occupancy + 90)


# ---------------------------------------------------------------------- observations
def test_queue_observation_matches_its_definition(
    recorded: tuple[TrafficSimulation, list[Snapshot]],
) -> None:
    sim, snaps = recorded
    obs_fn = QueueObservation()
    busy = False
    for snap in replayed(sim, snaps):
        for readings in (snap.readings, exaggerated(snap.readings)):
            got = obs_fn.observe_all(sim.views, readings)
            expected = np.concatenate([queue_reference(sim, v, readings) for v in sim.views])
            assert got.dtype == np.float32
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
            # one intersection at a time gives the same pieces
            pieces = np.concatenate([obs_fn(v, readings) for v in sim.views])
            np.testing.assert_array_equal(got, pieces)
        busy |= bool(snap.readings.queue[sim.views[0].entry].sum() > 0)
    assert busy  # the readings were not all trivial


def test_queue_observation_fits_its_space(
    recorded: tuple[TrafficSimulation, list[Snapshot]],
) -> None:
    sim, snaps = recorded
    obs_fn = QueueObservation()
    for v in sim.views:
        assert obs_fn.space(v).shape == (v.layout.num_phases + 1 + 3 * len(v.entry),)
    for snap in replayed(sim, snaps):
        for v in sim.views:
            assert obs_fn.space(v).contains(obs_fn(v, snap.readings))


def test_pressure_observation_is_one_hot_then_pressures_in_range(
    with_exits: tuple[TrafficSimulation, list[Snapshot]],
) -> None:
    sim, snaps = with_exits
    obs_fn = PressureObservation()
    nonzero = False
    for snap in replayed(sim, snaps):
        for readings in (snap.readings, snap.readings.with_values(count=snap.readings.count * 20)):
            all_obs = obs_fn.observe_all(sim.views, readings)
            assert all_obs.shape == (sum(2 * v.layout.num_phases for v in sim.views),)
            assert ((all_obs >= -1.0) & (all_obs <= 1.0)).all()
            for v in sim.views:
                obs = obs_fn(v, readings)
                assert obs_fn.space(v).contains(obs)
                n = v.layout.num_phases
                np.testing.assert_array_equal(obs[:n], np.eye(n)[v.green])
                nonzero |= bool(np.abs(obs[n:]).max() > 0)
    assert nonzero


def test_pressure_observation_sign_follows_entry_minus_exit(
    with_exits: tuple[TrafficSimulation, list[Snapshot]],
) -> None:
    sim, _ = with_exits
    base = blank(sim)
    view = sim.views[0]
    obs_fn = PressureObservation()
    k = view.layout.num_phases
    # vehicles waiting on the incoming lanes only: every phase has positive pressure
    count = np.zeros(len(sim.detectors.ids))
    count[view.entry] = 5
    assert (obs_fn(view, base.with_values(count=count))[k:] > 0).all()
    # vehicles on the outgoing lanes only: negative pressure
    count = np.zeros(len(sim.detectors.ids))
    count[view.exit] = 5
    assert (obs_fn(view, base.with_values(count=count))[k:] < 0).all()


def exit_reference(sim: TrafficSimulation, view: SignalView, r: Readings) -> np.ndarray:
    """QueueExitObservation's phase part from its definition: per green phase, the mean
    density of the outgoing lanes its movements lead to."""
    det = sim.detectors
    exits = [
        next(i for i, (d, e) in enumerate(zip(det.lanes, det.is_entry, strict=True))
             if d == lane and not e)
        for lane in view.layout.outgoing_lanes
    ]
    assert list(view.exit) == exits
    capacity = np.maximum(det.lengths[exits] / VEHICLE_SPACE_M, 1.0)
    density = r.count[exits] / capacity
    return np.clip([np.mean([density[o] for _, o in moves]) if moves else 0.0
                    for moves in view.layout.movements], 0.0, 1.0)


def test_queue_exit_observation_matches_its_definition(
    with_exits: tuple[TrafficSimulation, list[Snapshot]],
) -> None:
    sim, snaps = with_exits
    obs_fn = QueueExitObservation()
    assert obs_fn.needs_exits
    filled = False
    for snap in replayed(sim, snaps):
        for readings in (snap.readings, snap.readings.with_values(count=snap.readings.count * 20)):
            got = obs_fn.observe_all(sim.views, readings)
            expected = np.concatenate([np.concatenate((queue_reference(sim, v, readings),
                                                       exit_reference(sim, v, readings)))
                                       for v in sim.views])
            assert got.dtype == np.float32
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
            for v in sim.views:
                one = obs_fn(v, readings)
                assert obs_fn.space(v).contains(one)
                assert obs_fn.space(v).shape == (2 * v.layout.num_phases + 1 + 3 * len(v.entry),)
        filled |= any(exit_reference(sim, v, snap.readings).max() > 0 for v in sim.views)
    assert filled  # some outgoing lane held vehicles


@pytest.mark.parametrize("obs_fn", [QueueObservation(), QueueExitObservation(),
                                    PressureObservation()])
def test_default_observe_all_concatenates_the_views(
    obs_fn: ObservationFunction, with_exits: tuple[TrafficSimulation, list[Snapshot]]
) -> None:
    sim, snaps = with_exits
    snaps[-1].apply(sim.views)
    readings = snaps[-1].readings
    expected = ObservationFunction.observe_all(obs_fn, sim.views, readings)
    np.testing.assert_array_equal(obs_fn.observe_all(sim.views, readings), expected)


# --------------------------------------------------------------------------- rewards
ENTRY_REWARDS = [DelayReward(), WaitingTimeReward(), QueueReward()]


@pytest.mark.parametrize("reward", [*ENTRY_REWARDS, PressureReward()], ids=repr)
def test_reward_all_equals_each_intersection_on_its_own(
    reward: RewardFunction, recorded: tuple[TrafficSimulation, list[Snapshot]]
) -> None:
    sim, snaps = recorded
    for snap in snaps[1:]:
        together = reward.reward_all(sim.views, snap.readings, snap.dt)
        alone = [reward(v, snap.readings, snap.dt) for v in sim.views]
        assert together.shape == (len(sim.views),)
        np.testing.assert_allclose(together, alone, rtol=1e-12)


@pytest.mark.parametrize("reward", ENTRY_REWARDS, ids=repr)
def test_entry_rewards_match_their_definitions(
    reward: RewardFunction, recorded: tuple[TrafficSimulation, list[Snapshot]]
) -> None:
    sim, snaps = recorded
    negative = False
    for snap in snaps[1:]:
        got = reward.reward_all(sim.views, snap.readings, snap.dt)
        expected = [entry_reference(reward, v, snap.readings, snap.dt) for v in sim.views]
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
        assert (got <= 0).all()
        negative |= bool((got < 0).any())
    assert negative


def test_pressure_reward_is_minus_the_absolute_imbalance(
    with_exits: tuple[TrafficSimulation, list[Snapshot]],
) -> None:
    sim, _ = with_exits
    count = np.zeros(len(sim.detectors.ids))
    view = sim.views[0]
    count[view.entry[:2]] = [3, 4]
    count[view.exit[:1]] = 10
    assert PressureReward()(view, blank(sim).with_values(count=count), 5.0) == -3.0


def blank(sim: TrafficSimulation) -> Readings:
    n = len(sim.detectors.ids)
    return Readings(0.0, np.zeros(n), np.zeros(n), np.full(n, np.nan), np.zeros(n), np.zeros(n))


def test_delay_reward_is_zero_without_vehicles(cologne1: Scenario) -> None:
    sim = TrafficSimulation(cologne1)
    sim.close()
    assert (DelayReward().reward_all(sim.views, blank(sim), 5.0) == 0).all()


def test_delay_reward_charges_queued_vehicles_their_lost_time(cologne1: Scenario) -> None:
    sim = TrafficSimulation(cologne1)
    sim.close()
    view = sim.views[0]
    on_lane = np.arange(len(sim.detectors.ids)) == view.entry[0]
    limit = view.entry_speed_limit[0]

    def four_vehicles_at(speed: float) -> Readings:
        return blank(sim).with_values(
            count=np.where(on_lane, 4.0, 0.0),
            queue=np.where(on_lane, 4.0 if speed < 0.1 else 0.0, 0.0),
            speed=np.where(on_lane, speed, np.nan),
        )

    delay = DelayReward()
    # standing vehicles lose the whole 5 s step each; at half the limit, half of it
    assert delay(view, four_vehicles_at(0.0), 5.0) == pytest.approx(-20.0)
    assert delay(view, four_vehicles_at(0.5 * limit), 5.0) == pytest.approx(-10.0)
    # vehicles at or above the limit lose nothing
    assert delay(view, four_vehicles_at(limit), 5.0) == 0.0
    assert delay(view, four_vehicles_at(2 * limit), 5.0) == 0.0


def test_delay_reward_is_negative_when_a_real_queue_forms(
    recorded: tuple[TrafficSimulation, list[Snapshot]],
) -> None:
    sim, snaps = recorded
    reward = DelayReward()
    queued = [
        (s, i)
        for s in snaps[1:]
        for i, v in enumerate(sim.views)
        if s.readings.queue[v.entry].sum() > 0
    ]
    assert queued
    for snap, i in queued:
        assert reward.reward_all(sim.views, snap.readings, snap.dt)[i] < 0
