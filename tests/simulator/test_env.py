"""The Gymnasium environment: API checker, registration, determinism, horizon, programs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium.envs.registration import EnvSpec
from gymnasium.utils.env_checker import check_env

import networks
import simulator
from networks import Scenario
from simulator import PressureObservation, PressureReward, SimulationOptions, TrafficSignalEnv
from simulator.metrics import KPI_NAMES

HORIZON_S = 300  # of the grid22 and cologne1 fixtures
DECISION_S = SimulationOptions().decision_interval


@pytest.fixture
def make_env(closing: Callable[[Any], Any]) -> Callable[..., TrafficSignalEnv]:
    """Build environments closed after the test."""
    return lambda *args, **kwargs: closing(TrafficSignalEnv(*args, **kwargs))


@dataclasses.dataclass
class Episode:
    observations: list[np.ndarray]
    rewards: list[float]
    truncations: list[bool]
    infos: list[dict[str, Any]]
    kpis: dict[str, float]


def actions_for(env: gymnasium.Env[Any, Any], steps: int, seed: int = 42) -> list[Any]:
    space = env.action_space
    space.seed(seed)
    return [space.sample() for _ in range(steps)]


def run_episode(env: gymnasium.Env[Any, Any], seed: int | None, actions: list[Any]) -> Episode:
    """Reset with ``seed`` and play ``actions`` until the horizon; check every observation."""
    obs, info = env.reset(seed=seed)
    assert env.observation_space.contains(obs)
    ep = Episode([obs], [], [], [info], {})
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(obs), f"observation out of space at {info['time']}"
        assert terminated is False
        assert isinstance(reward, float)
        ep.observations.append(obs)
        ep.rewards.append(reward)
        ep.truncations.append(truncated)
        ep.infos.append(info)
        if truncated:
            ep.kpis = info["episode_kpis"]
            break
    return ep


STEPS = int(HORIZON_S / DECISION_S)


# ------------------------------------------------------------------------- API checks
def spec_for(scenario: Scenario, **options: Any) -> EnvSpec:
    """An unregistered spec, so that the checker also tests re-making and closing twice."""
    return EnvSpec(
        f"greenphase-test/{scenario.name}-v0",
        entry_point="simulator.env:TrafficSignalEnv",
        kwargs={"network": scenario, **options},
    )


def test_check_env_one_signal_discrete(cologne1: Scenario) -> None:
    env = gymnasium.make(spec_for(cologne1))
    try:
        assert isinstance(env.action_space, gymnasium.spaces.Discrete)
        check_env(env.unwrapped)
    finally:
        env.close()


@pytest.mark.parametrize(
    "options",
    [{}, {"observation": PressureObservation(), "reward": PressureReward()}],
    ids=["queue-delay", "pressure"],
)
def test_check_env_several_signals_multidiscrete(grid22: Scenario, options: dict[str, Any]) -> None:
    env = gymnasium.make(spec_for(grid22, **options))
    try:
        space = env.action_space
        assert isinstance(space, gymnasium.spaces.MultiDiscrete)
        assert list(space.nvec) == [2, 2, 2, 2]
        check_env(env.unwrapped)
    finally:
        env.close()


def test_every_network_is_registered_on_import() -> None:
    for name in networks.names():
        spec = gymnasium.spec(f"greenphase/{name}-v0")
        assert spec.entry_point is TrafficSignalEnv
        assert spec.kwargs == {"network": name}
    assert simulator.TrafficSignalEnv is TrafficSignalEnv


def test_make_registered_cologne1() -> None:
    env = gymnasium.make("greenphase/cologne1-v0")
    try:
        unwrapped = env.unwrapped
        assert isinstance(unwrapped, TrafficSignalEnv)
        assert unwrapped.sim.scenario.name == "cologne1"
        assert (unwrapped.sim.scenario.begin, unwrapped.sim.scenario.end) == (25200, 28800)
        assert env.action_space == gymnasium.spaces.Discrete(4)
        obs, info = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        assert info["time"] == 25200
        for _ in range(3):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert info["time"] == 25200 + 3 * DECISION_S
        assert not (terminated or truncated)
    finally:
        env.close()


def test_make_passes_options(cologne1: Scenario) -> None:
    env = gymnasium.make("greenphase/cologne1-v0", network=cologne1, decision_interval=10.0)
    try:
        unwrapped = env.unwrapped
        assert isinstance(unwrapped, TrafficSignalEnv)
        assert unwrapped.options == SimulationOptions(decision_interval=10.0)
        env.reset(seed=0)
        *_, info = env.step(0)
        assert info["time"] == 25210
    finally:
        env.close()


def test_options_are_the_defaults_unless_given(
    cologne1: Scenario, make_env: Callable[..., TrafficSignalEnv]
) -> None:
    assert make_env(cologne1).options == SimulationOptions()
    given = SimulationOptions(max_green=40.0, detector_length=30.0)
    env = make_env(cologne1, options=given, decision_interval=2.0)
    assert env.options == SimulationOptions.of(given, decision_interval=2.0)
    assert env.sim.decision_interval == 2.0
    assert env.sim.layouts[0].max_green == 40.0
    assert env.sim.detectors.lengths.max() <= 30.0


def test_a_wrong_simulation_keyword_is_one_clear_error(cologne1: Scenario) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'decison_interval'") as err:
        gymnasium.make("greenphase/cologne1-v0", network=cologne1, decison_interval=10.0)
    assert "\n" not in str(err.value) and "decision_interval" in str(err.value)
    with pytest.raises(ValueError, match=r"^TrafficSignalEnv: max_green: .*greater than 0") as bad:
        gymnasium.make("greenphase/cologne1-v0", network=cologne1, max_green=-1.0)
    assert "\n" not in str(bad.value)


# ------------------------------------------------------------------------ determinism
def test_same_seed_and_actions_give_the_same_episode(
    grid22: Scenario, make_env: Callable[..., TrafficSignalEnv]
) -> None:
    env = make_env(grid22)
    actions = actions_for(env, STEPS)
    first = run_episode(env, 7, actions)
    second = run_episode(env, 7, actions)
    assert len(first.observations) == len(second.observations) == STEPS + 1
    for a, b in zip(first.observations, second.observations, strict=True):
        np.testing.assert_array_equal(a, b)
    assert first.rewards == second.rewards
    assert first.kpis == second.kpis
    assert any(r < 0 for r in first.rewards)  # something happened

    # a fresh environment reproduces it too
    env.close()
    again = run_episode(make_env(grid22), 7, actions)
    assert again.rewards == first.rewards and again.kpis == first.kpis

    other = run_episode(make_env(grid22), 8, actions)
    assert other.kpis != first.kpis


def test_reset_without_seed_draws_a_different_sumo_seed(
    cologne1: Scenario,
    make_env: Callable[..., TrafficSignalEnv],
    seeds_drawn: Callable[[Any, int, int], set[int]],
) -> None:
    assert len(seeds_drawn(make_env(cologne1), 3, 3)) == 4


# ----------------------------------------------------------------------- the horizon
def test_episode_truncates_at_the_horizon_with_kpis(
    cologne1: Scenario, make_env: Callable[..., TrafficSignalEnv]
) -> None:
    env = make_env(cologne1)
    ep = run_episode(env, 0, actions_for(env, STEPS + 5))
    assert ep.truncations == [False] * (STEPS - 1) + [True]
    last = ep.infos[-1]
    assert last["time"] == cologne1.end
    assert set(last["episode_kpis"]) == set(KPI_NAMES)
    assert "episode_kpis" not in ep.infos[-2]
    assert env.result is not None and env.result.kpis == last["episode_kpis"]
    assert last["trips"] is env.result.trips
    assert ep.kpis["vehicles"] == len(env.result.trips) > 0
    with pytest.raises(RuntimeError, match="ended|not running"):
        env.step(0)
    # a new episode starts cleanly after the last one
    obs, info = env.reset(seed=1)
    assert info["time"] == cologne1.begin and env.result is None


def test_observations_lie_in_the_space_with_pressure(
    grid22: Scenario, make_env: Callable[..., TrafficSignalEnv]
) -> None:
    env = make_env(grid22, observation=PressureObservation(), reward=PressureReward())
    assert env.sim.detectors.is_entry.sum() < len(env.sim.detectors.ids)  # exits placed
    ep = run_episode(env, 0, actions_for(env, STEPS))
    assert ep.truncations[-1]
    assert (
        min(float(o.min()) for o in ep.observations)
        < 0
        < max(float(o.max()) for o in ep.observations)
    )


def test_observation_slices_cover_the_vector(
    grid22: Scenario, make_env: Callable[..., TrafficSignalEnv]
) -> None:
    env = make_env(grid22)
    sizes = [env.observation_fn.space(v).shape[0] for v in env.sim.views]
    slices = [env.observation_slice(i) for i in range(len(env.tls_ids))]
    assert [s.stop - s.start for s in slices] == sizes
    assert slices[0].start == 0 and slices[-1].stop == env.observation_space.shape[0]


# -------------------------------------------------------------------------- programs
def test_static_program_ignores_actions(
    grid22: Scenario, make_env: Callable[..., TrafficSignalEnv]
) -> None:
    env = make_env(grid22, program="static")
    zeros = [np.zeros(4, dtype=np.int64)] * STEPS
    ones = [np.ones(4, dtype=np.int64)] * STEPS
    a = run_episode(env, 2, zeros)
    greens_seen = {tuple(o[:2]) for o in a.observations}  # signal A0's phase one-hot
    b = run_episode(env, 2, ones)
    c = run_episode(env, 2, actions_for(env, STEPS))
    for x, y, z in zip(a.observations, b.observations, c.observations, strict=True):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
    assert a.rewards == b.rewards == c.rewards
    assert a.kpis == b.kpis == c.kpis
    # the network's own program cycles through both greens
    assert greens_seen == {(1.0, 0.0), (0.0, 1.0)}


def test_external_control_obeys_actions(
    grid22: Scenario, make_env: Callable[..., TrafficSignalEnv]
) -> None:
    env = make_env(grid22, max_green=1000.0)
    a = run_episode(env, 2, [np.zeros(4, dtype=np.int64)] * STEPS)
    # never asked to change, with no max green forcing it: the first green throughout
    assert {tuple(o[:2]) for o in a.observations} == {(1.0, 0.0)}
    b = run_episode(env, 2, [np.ones(4, dtype=np.int64)] * STEPS)
    assert a.kpis != b.kpis
