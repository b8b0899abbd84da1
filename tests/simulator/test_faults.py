"""Sensor faults: each kind does what it says, seeded; KPIs and rewards stay on the truth."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from experiments.runner import run_episode
from networks import Scenario
from simulator.faults import FIELDS, FaultConfig, FaultConfigError, FaultySensors
from simulator.options import SimulationOptions
from simulator.parallel import TrafficSignalParallelEnv
from simulator.sensors import Detectors, Readings

STEPS = 400


def detectors(entries: int = 40, exits: int = 10) -> Detectors:
    n = entries + exits
    return Detectors(
        tuple(f"d{i}" for i in range(n)), tuple(f"l{i}" for i in range(n)),
        np.full(n, 100.0), np.full(n, 13.9), np.arange(n) < entries,
    )


def reading(step: int, det: Detectors) -> Readings:
    """A distinct, positive value per sensor and step (so a repeat or a delay shows)."""
    n = len(det.ids)
    base = 1.0 + step + 1000.0 * np.arange(n)
    return Readings(float(step), base, np.full(n, 50.0), np.full(n, 10.0), base + 0.5,
                    np.full(n, 3.0))


def stream(config: FaultConfig | str, det: Detectors | None = None, seed: int = 7,
           steps: int = STEPS) -> tuple[np.ndarray, np.ndarray]:
    """The true and the delivered tables over an episode: (steps, fields, sensors)."""
    det = det or detectors()
    model = FaultySensors(config)
    model.reset(det, seed)
    true, seen = [], []
    for t in range(steps):
        r = reading(t, det)
        out = model.observe(r)
        true.append(np.stack([getattr(r, f) for f in FIELDS]))
        seen.append(np.stack([getattr(out, f) for f in FIELDS]))
    return np.array(true), np.array(seen)


def missing(seen: np.ndarray) -> np.ndarray:
    """(steps, sensors): a missing reading is NaN in every field."""
    nan = np.isnan(seen)
    assert (nan.all(axis=1) == nan.any(axis=1)).all(), "a reading went missing only in part"
    return nan.all(axis=1)


# ------------------------------------------------------------------ config
def test_parse_gives_the_fields_and_a_canonical_text() -> None:
    config = FaultConfig.parse(" noise=0.1, dropout=0.2,latency=2 ")
    assert config == FaultConfig(noise=0.1, dropout=0.2, latency=2)
    assert str(config) == "noise=0.1,dropout=0.2,latency=2"
    assert FaultConfig.parse(str(config)) == config
    assert FaultConfig.parse("") == FaultConfig() and not FaultConfig().active
    assert config.active


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("gremlins=0.1", ["unknown fault kind", "gremlins"]),
        ("dropout=1.5", ["dropout", "[0, 1)", "1.5"]),
        ("dropout=-0.1", ["dropout", "[0, 1)"]),
        ("failure=1", ["failure", "[0, 1)"]),
        ("stuck=2", ["stuck", "[0, 1)"]),
        ("noise=-1", ["noise", ">= 0"]),
        ("noise=nan", ["noise", "finite"]),
        ("latency=-1", ["latency", ">= 0"]),
        ("latency=1.5", ["latency", "integer"]),
        ("stuck_steps=0", ["stuck_steps", ">= 1"]),
        ("dropout", ["KIND=VALUE"]),
        ("dropout=abc", ["dropout", "number"]),
        ("dropout=0.1,dropout=0.2", ["twice"]),
    ],
)
def test_bad_faults_are_one_line_naming_the_field(text: str, words: list[str]) -> None:
    with pytest.raises(FaultConfigError) as info:
        FaultConfig.parse(text)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_the_constructor_checks_like_parse() -> None:
    with pytest.raises(FaultConfigError, match="^unknown fault kind 'gremlins'"):
        FaultConfig(gremlins=0.1)
    with pytest.raises(FaultConfigError, match="^latency must be an integer, got 1.5$"):
        FaultConfig(latency=1.5)
    with pytest.raises(FaultConfigError, match="^noise must be a number, got True$"):
        FaultConfig(noise=True)
    config = FaultConfig(noise=0.1)
    assert config.replace(dropout=0.3) == FaultConfig.parse("noise=0.1,dropout=0.3")
    with pytest.raises(FaultConfigError, match=r"dropout must be in \[0, 1\)"):
        config.replace(dropout=1.0)
    assert pickle.loads(pickle.dumps(config)) == config
    assert hash(config) == hash(FaultConfig(noise=0.1))


# ------------------------------------------------------------------ each fault
def test_no_fault_passes_readings_through() -> None:
    true, seen = stream("")
    np.testing.assert_array_equal(true, seen)


def test_dropout_loses_readings_at_its_rate() -> None:
    _, seen = stream("dropout=0.3")
    lost = missing(seen)
    assert lost.mean() == pytest.approx(0.3, abs=0.02)
    # independent per sensor: every sensor loses some and keeps most
    assert (lost.mean(axis=0) > 0.15).all() and (lost.mean(axis=0) < 0.45).all()


def test_noise_is_gaussian_relative_to_the_value_and_stays_physical() -> None:
    true, seen = stream("noise=0.1")
    count = 3
    error = seen[:, count] / true[:, count] - 1.0
    assert error.mean() == pytest.approx(0.0, abs=0.005)
    assert error.std() == pytest.approx(0.1, rel=0.05)
    assert not np.isnan(seen).any()
    wild_true, wild = stream("noise=3.0")
    assert (wild >= 0).all(), "no negative counts, queues or speeds"
    assert (wild[:, FIELDS.index("occupancy")] <= 100.0).all()
    assert (wild != wild_true).any()


def test_latency_delays_every_reading_by_exactly_n_steps() -> None:
    true, seen = stream("latency=3")
    assert missing(seen)[:3].all(), "nothing has arrived yet"
    np.testing.assert_array_equal(seen[3:], true[:-3])


def test_failure_kills_a_share_of_the_sensors_for_the_whole_episode() -> None:
    det = detectors(entries=40, exits=12)
    _, seen = stream("failure=0.25", det)
    lost = missing(seen)
    dead = lost.all(axis=0)
    assert (lost == dead).all(), "a sensor is either dead throughout or never missing"
    assert dead[:40].sum() == 10 and dead[40:].sum() == 3


def test_stuck_sensors_repeat_their_last_value_for_stuck_steps() -> None:
    true, seen = stream("stuck=0.02,stuck_steps=5")
    count = seen[:, 3]
    held = count != true[:, 3]
    assert 0.02 < held.mean() < 0.2
    for sensor in range(count.shape[1]):
        run = 0
        for t in range(count.shape[0]):
            if held[t, sensor]:
                assert t > 0 and count[t, sensor] == count[t - 1, sensor]
                run += 1
            else:
                assert run % 5 == 0, f"sensor {sensor} stuck for {run} steps"
                run = 0
    # every field of a stuck sensor repeats, not only the count
    t, sensor = np.argwhere(held)[0]
    np.testing.assert_array_equal(seen[t, :, sensor], seen[t - 1, :, sensor])


def test_faults_are_reproducible_by_seed_and_differ_between_seeds() -> None:
    config = "noise=0.1,dropout=0.2,stuck=0.01,failure=0.1"
    _, a = stream(config, seed=3)
    _, b = stream(config, seed=3)
    _, c = stream(config, seed=4)
    _, d = stream(FaultConfig.parse(config + ",seed=1"), seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c, equal_nan=True)
    assert not np.array_equal(a, d, equal_nan=True)


def test_entry_sensors_meet_the_same_faults_with_or_without_exit_detectors() -> None:
    config = "noise=0.1,dropout=0.2,stuck=0.01,failure=0.1"
    _, with_exits = stream(config, detectors(40, 10))
    _, entries_only = stream(config, detectors(40, 0))
    np.testing.assert_array_equal(with_exits[:, :, :40], entries_only)


def test_reset_starts_afresh_and_the_model_pickles() -> None:
    det = detectors()
    model = FaultySensors("latency=2,stuck=0.05,dropout=0.1")
    model.reset(det, 1)
    for t in range(20):
        model.observe(reading(t, det))
    copy = pickle.loads(pickle.dumps(model))
    for m in (model, copy):
        m.reset(det, 1)
    first = [model.observe(reading(t, det)).count for t in range(10)]
    again = [copy.observe(reading(t, det)).count for t in range(10)]
    np.testing.assert_array_equal(first, again)
    assert np.isnan(first[0]).all(), "the latency pipe was emptied by reset"


# ------------------------------------------------------------------ in SUMO
FAULTS = "noise=0.2,dropout=0.5,stuck=0.05,latency=2,failure=0.2"


def test_faults_leave_fixed_timing_kpis_and_the_true_queue_unchanged(
    grid2x2_short: Scenario,
) -> None:
    exact = run_episode(grid2x2_short, "fixed", 0)
    faulty = run_episode(grid2x2_short, "fixed", 0, SimulationOptions(faults=FAULTS))
    assert faulty.kpis == exact.kpis
    assert exact.kpis["mean_queue_veh"] > 0


def test_a_run_with_faults_gives_the_same_kpis_twice(grid2x2_short: Scenario) -> None:
    runs = [run_episode(grid2x2_short, "max-pressure", 1, SimulationOptions(faults=FAULTS))
            for _ in range(2)]
    assert runs[0].kpis == runs[1].kpis
    exact = run_episode(grid2x2_short, "max-pressure", 1)
    assert runs[0].kpis != exact.kpis, "max-pressure saw the faults"


def test_the_environment_rewards_true_readings_and_observes_faulty_ones(
    grid2x2_short: Scenario,
) -> None:
    def episode(model: FaultySensors | None) -> tuple[list, list, list]:
        env = TrafficSignalParallelEnv(grid2x2_short, program="static", sensor_model=model)
        try:
            obs, infos = env.reset(seed=2)
            observed, rewards, queues = [obs], [], []
            while env.agents:
                obs, reward, _, _, infos = env.step({})
                observed.append(obs)
                rewards.append(reward)
                queues.append({a: i["queue"] for a, i in infos.items()})
        finally:
            env.close()
        return observed, rewards, queues

    exact_obs, exact_rewards, exact_queues = episode(None)
    faulty_obs, faulty_rewards, faulty_queues = episode(FaultySensors(FAULTS))
    assert faulty_rewards == exact_rewards
    assert faulty_queues == exact_queues
    assert any(
        not np.array_equal(a[k], b[k], equal_nan=True)
        for a, b in zip(exact_obs, faulty_obs, strict=True) for k in a
    )
