"""Federated training end to end: run layout with bytes per round, resume, spec, command line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from agents.dqn import DQNConfig
from agents.federated import FederatedConfig
from agents.optim import ConfigError, OptimConfig
from agents.trained import load_policy
from experiments import results
from experiments.cli import app
from experiments.train import TrainSpec, train
from networks import Scenario
from tests.conftest import assert_bad_input, curves, interrupted_and_resumed

runner = CliRunner()


def fed_spec(**changes) -> TrainSpec:
    spec = TrainSpec(
        algo="dqn", episodes=2, eval_every=1, hidden=(16,),
        dqn=DQNConfig(learning_starts=40, target_every=10, buffer_size=800),
        optim=OptimConfig(batch_size=16), federated=FederatedConfig(local_episodes=1),
    )
    return spec.replace(**changes)


def user_net_args(sc: Scenario) -> list[str]:
    return ["--net", str(sc.net_file), "--routes", str(sc.route_files[0]), "--end", str(sc.end)]


def test_federated_training_writes_bytes_per_round_and_a_loadable_policy(
    grid2x2_short: Scenario, tmp_path: Path
) -> None:
    result = train(fed_spec(), grid2x2_short, tmp_path / "run")
    assert result.episodes == 2 and not result.stopped
    curves = pd.read_csv(result.run / "curves.csv")
    episodes = curves[curves["kind"] == "episode"]
    updates = curves[curves["kind"] == "update"]
    # K = 1: a round after every episode, 4 uploads and 4 downloads of the same-sized weights
    assert (episodes["bytes"] > 0).all()
    assert episodes["bytes"].nunique() == 1
    assert len(updates) > 0 and updates[["lr", "loss", "grad_norm"]].notna().all().all()
    assert list(updates["update"]) == list(range(1, len(updates) + 1))  # one row per step
    net, policy = load_policy(result.run)
    assert policy["shared"] is True and len(net.bodies) == 1
    assert len(policy["tls_ids"]) == 4
    data = torch.load(result.run / "checkpoints" / "last.pt", weights_only=True)
    learner = data["learner"]
    assert len(learner["clients"]) == 4 and learner["server"]["rounds"] == 2
    assert learner["channel"]["bytes_up"] > 0
    # the saved policy is the global model, the clients' average after the last round
    for key, value in learner["server"]["net"].items():
        assert torch.equal(value, data["policy"]["net"][key])
    spec_text = (result.run / "spec.toml").read_text()
    assert "[federated]" in spec_text and "local_episodes = 1" in spec_text


def test_federated_training_resumes_where_it_stopped(
    grid2x2_short: Scenario, tmp_path: Path
) -> None:
    spec = fed_spec(episodes=3)
    whole = train(spec, grid2x2_short, tmp_path / "whole")
    resumed = interrupted_and_resumed(spec, grid2x2_short, tmp_path / "cut")
    assert resumed.episodes == 3
    pd.testing.assert_frame_equal(curves(whole.run), curves(resumed.run))


def test_spec_round_trip_with_and_without_federated() -> None:
    spec = fed_spec(federated=FederatedConfig(local_episodes=2, proximal_mu=0.01), episodes=4)
    assert TrainSpec.from_dict(spec.to_dict()) == spec
    plain = fed_spec(federated=None)
    assert "federated" not in plain.to_dict()
    assert TrainSpec.from_dict(plain.to_dict()) == plain
    assert "[federated]" in results.toml_text(spec.to_dict())
    unclipped = spec.replace(optim=OptimConfig(grad_clip=None), decision_interval=10.0)
    assert TrainSpec.from_dict(unclipped.to_dict()) == unclipped


@pytest.mark.parametrize("changes, words", [
    ({"shared": False}, "shared architecture"),
    ({"algo": "ppo"}, "algo dqn"),
    ({"episodes": 3, "federated": FederatedConfig(local_episodes=2)}, "multiple"),
    ({"normalize": True}, "normalisation"),
])
def test_federated_spec_refuses_what_it_cannot_do(changes: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        fed_spec(**changes)


def test_train_federated_from_the_command_line(grid2x2_short: Scenario, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = runner.invoke(app, [
        "train", *user_net_args(grid2x2_short), "--federated", "--local-episodes", "1",
        "--rounds", "1", "--hidden", "8", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    stored = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["spec"]
    assert stored["episodes"] == 1
    assert stored["federated"] == {"local_episodes": 1, "proximal_mu": 0.0, "weighting": "samples"}


@pytest.mark.parametrize("args, words", [
    (["--rounds", "2"], "need --federated"),
    (["--proximal", "0.1"], "need --federated"),
    (["--federated", "--independent"], "shared architecture"),
    (["--federated", "--rounds", "0"], "--rounds"),
    (["--federated", "--rounds", "2", "--local-episodes", "2", "--episodes", "5"], "--episodes 5"),
    (["--federated", "--local-episodes", "0"], "local_episodes"),
    (["--federated", "--proximal", "-1"], "proximal_mu"),
    (["--federated", "--episodes", "3", "--local-episodes", "2"], "multiple"),
])
def test_bad_federated_options_give_one_line_and_status_2(
    grid2x2_short: Scenario, tmp_path: Path, args: list[str], words: str
) -> None:
    assert_bad_input(runner.invoke(app, ["train", *user_net_args(grid2x2_short), *args,
                                         "--out", str(tmp_path / "bad")]), words)
