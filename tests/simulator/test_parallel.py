"""The PettingZoo parallel environment: API test, agents, spaces, and parity with Gymnasium."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from gymnasium import spaces
from pettingzoo.test import parallel_api_test

import simulator
from networks import Scenario
from simulator import PressureObservation, PressureReward, SimulationOptions, TrafficSignalEnv
from simulator.metrics import KPI_NAMES
from simulator.parallel import TrafficSignalParallelEnv

HORIZON_S = 300  # of the grid22 and cologne1 fixtures
STEPS = HORIZON_S // 5


@pytest.mark.parametrize(
    ("network", "options"),
    [
        ("grid22", {}),
        ("grid22", {"observation": PressureObservation(), "reward": PressureReward()}),
        ("cologne1", {}),
        ("grid22", {"program": "static"}),
    ],
    ids=["grid-queue-delay", "grid-pressure", "cologne1", "grid-static"],
)
def test_parallel_api_test_passes(
    network: str,
    options: dict[str, Any],
    request: pytest.FixtureRequest,
    closing: Callable[[Any], Any],
) -> None:
    env = closing(TrafficSignalParallelEnv(request.getfixturevalue(network), **options))
    # enough cycles to reach the horizon, where every agent is truncated at once
    parallel_api_test(env, num_cycles=STEPS + 10)
    assert env.agents == []
    assert env.result is not None


def test_agents_are_the_signals(grid22: Scenario, closing: Callable[[Any], Any]) -> None:
    env = closing(simulator.parallel_env(grid22))
    assert isinstance(env, TrafficSignalParallelEnv)
    assert env.possible_agents == env.sim.tls_ids == ["A0", "A1", "B0", "B1"]
    assert env.agents == []  # until reset
    obs, infos = env.reset(seed=0)
    assert env.agents == env.possible_agents and env.agents is not env.possible_agents
    assert set(obs) == set(infos) == set(env.possible_agents)
    assert env.metadata["name"] == "greenphase_v0"
    assert env.render() is None


def test_each_agent_has_its_own_spaces(grid22: Scenario, closing: Callable[[Any], Any]) -> None:
    env = closing(TrafficSignalParallelEnv(grid22))
    obs, _ = env.reset(seed=0)
    for agent, view in zip(env.possible_agents, env.sim.views, strict=True):
        box = env.observation_space(agent)
        assert box is env.observation_space(agent)
        assert env.action_space(agent) is env.action_space(agent)
        assert isinstance(box, spaces.Box)
        lanes = len(view.layout.incoming_lanes)
        assert box.shape == (view.layout.num_phases + 1 + 3 * lanes,)
        assert env.action_space(agent) == spaces.Discrete(view.layout.num_phases)
        assert box.contains(obs[agent])
    # the state is every agent's observation, concatenated
    np.testing.assert_array_equal(env.state(), np.concatenate(list(obs.values())))
    assert env.state_space.contains(env.state())


def test_spaces_differ_between_signals_of_different_size(
    cologne1: Scenario, closing: Callable[[Any], Any]
) -> None:
    env = closing(TrafficSignalParallelEnv(cologne1, observation=PressureObservation()))
    (agent,) = env.possible_agents
    assert agent == "GS_cluster_357187_359543"
    assert env.action_space(agent) == spaces.Discrete(4)
    assert env.observation_space(agent) == spaces.Box(-1.0, 1.0, (8,), np.float32)


def test_rewards_and_observations_match_the_gym_env(
    grid22: Scenario, closing: Callable[[Any], Any]
) -> None:
    rng = np.random.default_rng(9)
    actions = [rng.integers(0, 2, size=4) for _ in range(STEPS)]

    gym_env = closing(TrafficSignalEnv(grid22))
    gym_obs = [gym_env.reset(seed=4)[0]]
    gym_rewards = []
    for action in actions:
        obs, reward, _, truncated, info = gym_env.step(action)
        gym_obs.append(obs)
        gym_rewards.append(reward)
    assert truncated
    gym_kpis = info["episode_kpis"]
    gym_env.close()

    env = closing(TrafficSignalParallelEnv(grid22))
    agents = env.possible_agents
    obs, _ = env.reset(seed=4)
    np.testing.assert_array_equal(np.concatenate([obs[a] for a in agents]), gym_obs[0])
    for k, action in enumerate(actions):
        obs, rewards, terminations, truncations, infos = env.step(
            dict(zip(agents, action, strict=True))
        )
        np.testing.assert_array_equal(np.concatenate([obs[a] for a in agents]), gym_obs[k + 1])
        assert sum(rewards.values()) == pytest.approx(gym_rewards[k], rel=1e-12, abs=1e-9)
        assert not any(terminations.values())
        assert all(truncations.values()) == (k == STEPS - 1)
    for agent in agents:
        assert infos[agent]["episode_kpis"] == gym_kpis
        assert set(infos[agent]["episode_kpis"]) == set(KPI_NAMES)
    assert env.result is not None and env.result.kpis == gym_kpis
    assert env.agents == []


def test_rewards_are_per_signal(grid22: Scenario, closing: Callable[[Any], Any]) -> None:
    env = closing(TrafficSignalParallelEnv(grid22))
    env.reset(seed=1)
    differ = False
    while env.agents:
        _, rewards, *_ = env.step({a: 0 for a in env.agents})
        views = dict(zip(env.possible_agents, env.sim.views, strict=True))
        for agent, reward in rewards.items():
            assert reward == env.reward_fn(views[agent], env.sim.readings, 5.0)
        differ |= len(set(rewards.values())) > 1
    assert differ


def test_infos_carry_time_and_each_signals_queue(
    grid22: Scenario, closing: Callable[[Any], Any]
) -> None:
    env = closing(TrafficSignalParallelEnv(grid22))
    env.reset(seed=1)
    for _ in range(20):
        *_, infos = env.step({a: 1 for a in env.agents})
    readings = env.sim.readings
    assert readings is not None
    for agent, view in zip(env.possible_agents, env.sim.views, strict=True):
        assert infos[agent]["time"] == 100.0
        assert infos[agent]["queue"] == readings.queue[view.entry].sum()


def test_same_seed_same_episode_and_seedless_resets_differ(
    cologne1: Scenario,
    closing: Callable[[Any], Any],
    seeds_drawn: Callable[[Any, int, int], set[int]],
) -> None:
    env = closing(TrafficSignalParallelEnv(cologne1))
    (agent,) = env.possible_agents

    def play(seed: int | None) -> dict[str, float]:
        env.reset(seed=seed)
        k = 0
        while env.agents:
            *_, infos = env.step({agent: (k // 4) % 4})
            k += 1
        return infos[agent]["episode_kpis"]

    assert play(5) == play(5)
    assert play(5) != play(6)
    assert len(seeds_drawn(env, 5, 2)) == 3


def test_actions_must_name_every_signal(grid22: Scenario, closing: Callable[[Any], Any]) -> None:
    env = closing(TrafficSignalParallelEnv(grid22))
    with pytest.raises(RuntimeError, match="reset"):
        env.step({a: 0 for a in env.possible_agents})
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"missing \['B1'\]"):
        env.step({"A0": 0, "A1": 0, "B0": 0})
    with pytest.raises(ValueError, match=r"unknown \['C9'\]"):
        env.step({"A0": 0, "A1": 0, "B0": 0, "B1": 0, "C9": 0})
    with pytest.raises(ValueError, match="not in 0..1"):
        env.step({"A0": 0, "A1": 0, "B0": 0, "B1": 2})


def test_static_program_needs_no_actions(grid22: Scenario, closing: Callable[[Any], Any]) -> None:
    env = closing(TrafficSignalParallelEnv(grid22, program="static"))
    env.reset(seed=0)
    steps = 0
    while env.agents:
        env.step({})
        steps += 1
    assert steps == STEPS


def test_options_and_keywords_reach_the_simulation(
    grid22: Scenario, closing: Callable[[Any], Any]
) -> None:
    assert closing(TrafficSignalParallelEnv(grid22)).options == SimulationOptions()
    env = closing(simulator.parallel_env(grid22, options=SimulationOptions(min_green=7.0),
                                         decision_interval=10.0))
    assert env.options == SimulationOptions(min_green=7.0, decision_interval=10.0)
    env.reset(seed=0)
    *_, infos = env.step({a: 0 for a in env.agents})
    assert infos["A0"]["time"] == 10.0
    with pytest.raises(TypeError, match="unexpected keyword argument 'green'"):
        TrafficSignalParallelEnv(grid22, green=3)
