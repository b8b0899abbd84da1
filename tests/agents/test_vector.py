"""Several simulations at once: the vector of environments, and DQN and PPO trained on it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from agents.dqn import DQN, DQNConfig, epsilon_greedy
from agents.federated import FederatedConfig
from agents.models import SignalNetwork
from agents.optim import ConfigError, OptimConfig
from agents.ppo import PPOConfig
from experiments.train import (
    TrainSpec,
    default_simulations,
    train,
    training_seed,
    with_simulations,
)
from experiments.units import training_table
from networks import Scenario
from simulator.parallel import TrafficSignalParallelEnv
from simulator.vector import SimulationVector
from tests.conftest import curves, interrupted_and_resumed


@pytest.fixture(scope="module")
def tiny(grid1x1: Scenario) -> Scenario:
    """One signal, five simulated minutes: 60 decisions an episode."""
    return dataclasses.replace(grid1x1, end=300)


def phases_at(step: int, agents: list[str]) -> dict[str, int]:
    """A fixed plan: every signal changes green every third decision."""
    return dict.fromkeys(agents, (step // 3) % 2)


def run_alone(scenario: Scenario, seed: int) -> tuple[list[float], dict[str, float]]:
    env = TrafficSignalParallelEnv(scenario)
    try:
        env.reset(seed=seed)
        rewards, step = [], 0
        while env.agents:
            _, reward, *_ = env.step(phases_at(step, env.possible_agents))
            rewards.append(sum(reward.values()))
            step += 1
        assert env.result is not None
        return rewards, env.result.kpis
    finally:
        env.close()


def test_simulations_at_once_equal_each_simulation_alone(tiny: Scenario) -> None:
    vector = SimulationVector(lambda: TrafficSignalParallelEnv(tiny), 3)
    try:
        obs = vector.reset([7, 8])  # fewer seeds than simulations: the first two run
        assert len(obs) == 2 and vector.active == 2
        rewards: list[list[float]] = [[], []]
        step = 0
        while vector.running:
            answers = vector.step([phases_at(step, vector.possible_agents)] * 2)
            for i, (_, reward, *_) in enumerate(answers):
                rewards[i].append(sum(reward.values()))
            step += 1
        results = vector.results()
        assert step == 60 and not vector.envs[2].agents
    finally:
        vector.close()
    for i, seed in enumerate((7, 8)):
        alone_rewards, alone_kpis = run_alone(tiny, seed)
        assert rewards[i] == alone_rewards
        assert results[i].kpis == alone_kpis
    assert rewards[0] != rewards[1]  # the seeds differ, so does the traffic


def test_an_error_in_one_simulation_is_raised_after_every_step_ends(tiny: Scenario) -> None:
    vector = SimulationVector(lambda: TrafficSignalParallelEnv(tiny), 2)
    try:
        vector.reset([1, 2])
        agents = vector.possible_agents
        with pytest.raises(ValueError, match="phase 9"):
            vector.step([phases_at(0, agents), dict.fromkeys(agents, 9)])
        # the good simulation stepped; the bad one refused before stepping
        assert vector.envs[0].sim.time > vector.envs[1].sim.time
        with pytest.raises(ValueError, match="expected 1 to 2 seeds"):
            vector.reset([1, 2, 3])
        with pytest.raises(ValueError, match="actions for 2 simulations"):
            vector.step([phases_at(0, agents)])
    finally:
        vector.close()
    assert all(env.sim._child is None for env in vector.envs)
    with pytest.raises(ValueError, match="at least 1"):
        SimulationVector(lambda: TrafficSignalParallelEnv(tiny), 0)


# ------------------------------------------------------------------ the setting
def test_the_simulations_setting() -> None:
    spec = TrainSpec()
    assert spec.simulations is None and spec.simulation_count == 1
    assert TrainSpec(simulations=1) == spec  # one is the way runs always trained
    assert "simulations" not in training_table(spec)  # so a run unit's hash stays
    assert training_table(TrainSpec(simulations=3))["simulations"] == 3
    assert spec.to_dict()["simulations"] == 1  # spec.toml and checkpoints say it
    assert TrainSpec.from_dict(TrainSpec(simulations=3).to_dict()).simulation_count == 3
    assert with_simulations(spec, 2).simulation_count == 2
    assert with_simulations(spec, 0).simulation_count == default_simulations()
    assert with_simulations(spec, 1).simulation_count == 1
    assert 1 <= default_simulations() <= 8
    federated = TrainSpec(federated=FederatedConfig(), episodes=2)
    assert with_simulations(federated, 0).simulation_count == 1
    with pytest.raises(ConfigError, match="simulations must be 1, got 2"):
        TrainSpec(federated=FederatedConfig(), episodes=2, simulations=2)
    with pytest.raises(ConfigError, match="simulations"):
        TrainSpec(simulations=0)


def test_dqn_counts_every_simulation_as_a_decision_step() -> None:
    torch.manual_seed(0)
    net = SignalNetwork([4, 4], [2, 2], (8,))
    config = DQNConfig(learning_starts=8, train_every=1)
    dqn = DQN(net, config, OptimConfig(batch_size=4), 100, np.random.default_rng(0))
    agent = torch.arange(2).repeat(3)  # three simulations of two intersections
    logs = []
    for _ in range(3):
        obs = torch.rand(6, 4)
        logs += dqn.observe(obs, agent, np.zeros(6, dtype=np.int64), np.ones(6, np.float32),
                            torch.rand(6, 4))
    assert dqn.steps == 9  # three calls, three simulations each
    assert dqn.epsilon == pytest.approx(1.0 - 0.95 * 9 / 30)
    # an update due per simulation's step from the second call on (12 stored >= 8); the
    # three due in one call are one gradient step on their batches together
    assert [log["update"] for log in logs] == [1, 2]
    assert dqn.slots == 6


def test_dqn_draws_without_its_network_only_while_every_action_is_drawn() -> None:
    net = SignalNetwork([4, 4], [2, 3], (8,))
    agent = torch.arange(2).repeat(50)
    obs = torch.rand(100, 4)
    always = DQN(net, DQNConfig(epsilon_end=1.0), OptimConfig(), 100, np.random.default_rng(0))
    calls = []
    net.register_forward_hook(lambda *args: calls.append(1))
    drawn = always.act(obs, agent, explore=True)
    assert calls == [] and (drawn < np.array([2, 3] * 50)).all()
    assert set(drawn[1::2]) == {0, 1, 2}  # every phase of the three-phase signal drawn
    # the same draws as the network's choices replaced one by one (the RNG stream is unchanged)
    replaced = DQN(net, DQNConfig(epsilon_end=1.0), OptimConfig(), 100, np.random.default_rng(0))
    greedy = net(obs, agent)[0].argmax(dim=1).numpy()
    phases = np.array([2, 3] * 50)
    assert (epsilon_greedy(greedy, phases, 1.0, replaced.rng) == drawn).all()
    calls.clear()
    always.act(obs, agent, explore=False)  # greedy: the network decides
    assert calls == [1]


def test_merged_updates_keep_the_schedule_and_the_target_copies_of_single_ones() -> None:
    def learner(simulations: int) -> DQN:
        torch.manual_seed(0)
        net = SignalNetwork([4], [2], (8,))
        config = DQNConfig(learning_starts=4, target_every=4)
        optim = OptimConfig(batch_size=4, schedule="cosine", lr=0.1)
        return DQN(net, config, optim, 24, np.random.default_rng(0))

    one, three = learner(1), learner(3)
    for _ in range(12):
        one.observe(torch.rand(1, 4), torch.zeros(1, dtype=torch.long),
                    np.zeros(1, dtype=np.int64), np.ones(1, np.float32), torch.rand(1, 4))
    copies = []
    for _ in range(4):
        before = [t.clone() for t in three.target.parameters()]
        three.observe(torch.rand(3, 4), torch.zeros(3, dtype=torch.long),
                      np.zeros(3, dtype=np.int64), np.ones(3, np.float32), torch.rand(3, 4))
        copies.append(not all(torch.equal(a, b) for a, b in zip(before, three.target.parameters())))
    assert one.steps == three.steps == 12 and one.slots == three.slots == 9
    assert one.stepper.updates == 9 and three.stepper.updates == 3  # steps 4-12: 3 at a time
    assert three.stepper.lr == pytest.approx(one.stepper.lr)  # the schedule went as far
    assert copies == [False, False, True, True]  # copies after slots 4 and 8, as one would


# ------------------------------------------------------------------ training
def dqn_spec(**changes) -> TrainSpec:
    spec = TrainSpec(
        algo="dqn", episodes=4, eval_every=2, hidden=(16,), simulations=2,
        dqn=DQNConfig(learning_starts=20, target_every=10, buffer_size=500),
        optim=OptimConfig(batch_size=16),
    )
    return spec.replace(**changes)


def test_two_simulations_train_deterministically_and_resume_exactly(
    tiny: Scenario, tmp_path: Path
) -> None:
    a = train(dqn_spec(), tiny, tmp_path / "a")
    b = train(dqn_spec(), tiny, tmp_path / "b")
    ca = curves(a.run)
    pd.testing.assert_frame_equal(ca, curves(b.run))
    episodes = ca[ca["kind"] == "episode"]
    assert list(episodes["episode"]) == [0, 1, 2, 3]
    # each episode its own traffic; evaluations on the round's last episode
    assert episodes["mean_delay_s"].nunique() == 4
    assert episodes["eval_delay_s"].isna().tolist() == [True, False, True, False]
    updates = ca[ca["kind"] == "update"]
    assert set(updates["episode"]) == {0, 2}  # a round's updates under its first episode
    # an update of both simulations' batches per step once 20 transitions are in (the 10th)
    assert len(updates) == 51 + 60
    # exploration counts both simulations' steps: done after 72 of the run's 240, so at
    # the first round's end (120; counting rounds' steps alone it would be 60, epsilon 0.21)
    assert episodes["epsilon"].tolist() == pytest.approx([0.05] * 4)
    assert 'simulations = 2' in (a.run / "spec.toml").read_text()
    resumed = interrupted_and_resumed(dqn_spec(), tiny, tmp_path / "cut", after=2)
    assert resumed.episodes == 4
    pd.testing.assert_frame_equal(ca, curves(resumed.run))


def test_ppo_learns_from_every_simulation(tiny: Scenario, tmp_path: Path) -> None:
    spec = TrainSpec(algo="ppo", episodes=3, eval_every=3, hidden=(16,), simulations=2,
                     ppo=PPOConfig(epochs=2), optim=OptimConfig(batch_size=32, lr=3e-4))
    result = train(spec, tiny, tmp_path / "ppo")
    rows = curves(result.run)
    episodes = rows[rows["kind"] == "episode"]
    assert list(episodes["episode"]) == [0, 1, 2]  # a round of two, then one of one
    updates = rows[rows["kind"] == "update"]
    # 120 samples a round of two (batches of 32, 2 epochs: 8), then 60 (4)
    assert updates.groupby("episode").size().to_dict() == {0: 8, 2: 4}
    assert episodes["eval_delay_s"].notna().tolist() == [False, False, True]


def test_an_evaluation_is_the_mean_over_its_seeds_run_as_many_at_once_as_simulations(
    tiny: Scenario, tmp_path: Path
) -> None:
    from agents import checkpoint
    from experiments.results import plain
    from experiments.train import Trainer

    spec = dqn_spec(episodes=2, eval_every=2, eval_seeds=3)
    assert spec.evaluation_seeds == [10_000, 10_001, 10_002]
    result = train(spec, tiny, tmp_path / "three")
    # the one evaluation scored best.pt: replay its policy greedily on each seed alone
    trainer = Trainer(spec.replace(simulations=None), tiny, tmp_path / "replay")
    try:
        trainer.net.load_state_dict(
            checkpoint.load(result.run / "checkpoints" / "best.pt")["policy"]["net"])
        alone = [trainer.run_round([s], learn=False)[1][0]["mean_delay_s"]
                 for s in spec.evaluation_seeds]
    finally:
        trainer.close()
    assert len(set(alone)) == 3  # three draws of traffic, not one three times
    assert result.best_eval_delay_s == pytest.approx(float(np.mean(alone)))
    assert "eval_seeds = 3" in (result.run / "spec.toml").read_text()
    # one seed is the default and hashes as before: the setting stays out of a run's identity
    assert TrainSpec(eval_seeds=1) == TrainSpec()
    assert "eval_seeds" not in plain(TrainSpec()) and plain(spec)["eval_seeds"] == 3


def test_schedules_planned_over_fewer_episodes_run_them_first_then_hold(
    tiny: Scenario, tmp_path: Path
) -> None:
    cosine = OptimConfig(batch_size=16, schedule="cosine", min_lr=1e-5)
    planned = train(dqn_spec(episodes=2, optim=cosine), tiny, tmp_path / "two")
    longer = train(dqn_spec(episodes=4, schedule_episodes=2, optim=cosine), tiny,
                   tmp_path / "four")
    a, b = curves(planned.run), curves(longer.run)
    # the first round is the two-episode run's, to the last digit
    pd.testing.assert_frame_equal(a, b[b["episode"] < 2].reset_index(drop=True))
    # then the cosine schedule ends (its last updates were planned over the first
    # learning steps too) and stays at its floor, where cosine would rise again
    later = b[(b["episode"] >= 2) & (b["kind"] == "update")]["lr"]
    assert later.is_monotonic_decreasing and later.iloc[0] < a["lr"].dropna().iloc[0]
    floor = later.iloc[len(later) // 2:].tolist()
    assert floor == pytest.approx([1e-5] * len(floor))
    held = b[b["episode"] >= 2]["epsilon"].tolist()  # exploration held at its end too
    assert held == pytest.approx([0.05] * len(held))
    with pytest.raises(ValueError, match="schedule_episodes"):
        dqn_spec(episodes=2, schedule_episodes=3)


def test_a_wall_budget_ends_the_run_once_the_planned_episodes_are_done(
    tiny: Scenario, tmp_path: Path
) -> None:
    # spent at once: the planned round runs, ends with an evaluation (none due), and stops
    spent = train(dqn_spec(episodes=6, schedule_episodes=2, eval_every=5, budget_s=1e-6),
                  tiny, tmp_path / "spent")
    assert spent.episodes == 2 and not spent.stopped
    episodes = curves(spent.run).query("kind == 'episode'")
    assert episodes["eval_delay_s"].notna().tolist() == [False, True]
    assert spent.best_eval_delay_s == episodes["eval_delay_s"].iloc[-1]
    assert "wall budget" in (spent.run / "log.txt").read_text()
    # never before the planned episodes; and time left runs them all
    assert train(dqn_spec(episodes=6, schedule_episodes=4, budget_s=1e-6), tiny,
                 tmp_path / "planned").episodes == 4
    assert train(dqn_spec(episodes=4, schedule_episodes=2, budget_s=1e6), tiny,
                 tmp_path / "time").episodes == 4
    with pytest.raises(ConfigError, match="budget_s"):  # its rounds average whole
        TrainSpec(federated=FederatedConfig(), episodes=2, budget_s=60.0)


def test_training_seeds_are_distinct_across_simulations_and_runs() -> None:
    seeds = {training_seed(TrainSpec(seed=s), e) for s in range(3) for e in range(50)}
    assert len(seeds) == 150 and min(seeds) >= 100_000


def test_train_command_takes_simulations(tiny: Scenario, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from experiments.cli import app
    from tests.conftest import assert_bad_input

    runner = CliRunner()
    args = ["train", "--net", str(tiny.net_file), "--routes", str(tiny.route_files[0]),
            "--end", "120", "--hidden", "8", "--episodes", "2"]
    run = tmp_path / "run"
    result = runner.invoke(app, [*args, "--simulations", "2", "--eval-seeds", "2",
                                 "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert "trained 2 episodes" in result.stdout
    assert "simulations = 2" in (run / "spec.toml").read_text()
    assert "eval_seeds = 2" in (run / "spec.toml").read_text()
    assert list(curves(run).query("kind == 'episode'")["episode"]) == [0, 1]
    assert_bad_input(runner.invoke(app, [*args, "--simulations", "-1"]), "simulations")
    assert_bad_input(runner.invoke(app, [*args, "--eval-seeds", "0"]), "eval-seeds")
    assert_bad_input(runner.invoke(app, [*args, "--federated", "--simulations", "2"]),
                     "simulations must be 1, got 2")


def test_ppo_with_two_simulations_resumes_exactly(tiny: Scenario, tmp_path: Path) -> None:
    # three episodes an update: the first round's two wait in the checkpoint for the second
    spec = TrainSpec(algo="ppo", episodes=4, eval_every=4, hidden=(16,), simulations=2,
                     ppo=PPOConfig(epochs=1, episodes_per_update=3),
                     optim=OptimConfig(batch_size=64))
    whole = train(spec, tiny, tmp_path / "whole")
    rows = curves(whole.run)
    assert rows.query("kind == 'update'")["episode"].unique().tolist() == [2]
    resumed = interrupted_and_resumed(spec, tiny, tmp_path / "cut", after=2)
    pd.testing.assert_frame_equal(rows, curves(resumed.run))
