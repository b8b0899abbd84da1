"""Training end to end on a tiny network: layout, determinism, resume, checkpoints, divergence."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from agents.dqn import DQNConfig
from agents.optim import OptimConfig
from agents.ppo import PPOConfig
from experiments.cli import app
from experiments.train import TrainSpec, train
from networks import Scenario
from tests.conftest import assert_bad_input, curves, interrupted_and_resumed

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(grid1x1: Scenario) -> Scenario:
    """One signal, five simulated minutes: 60 decisions an episode."""
    return dataclasses.replace(grid1x1, end=300)


def dqn_spec(**changes) -> TrainSpec:
    spec = TrainSpec(
        algo="dqn", episodes=3, eval_every=1, hidden=(16,),
        dqn=DQNConfig(learning_starts=20, target_every=10, buffer_size=500),
        optim=OptimConfig(batch_size=16),
    )
    return spec.replace(**changes)


def ppo_spec(**changes) -> TrainSpec:
    spec = TrainSpec(algo="ppo", episodes=2, eval_every=2, hidden=(16,),
                     ppo=PPOConfig(epochs=2), optim=OptimConfig(batch_size=32, lr=3e-4))
    return spec.replace(**changes)


def policy_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["policy"]["net"]


def test_dqn_trains_end_to_end_into_the_run_layout(tiny: Scenario, tmp_path: Path) -> None:
    result = train(dqn_spec(), tiny, tmp_path / "run")
    run = result.run
    assert result.episodes == 3 and not result.stopped
    for name in ("spec.toml", "curves.csv", "log.txt", "checkpoints/last.pt",
                 "checkpoints/best.pt", "plots/learning_curve.png"):
        assert (run / name).is_file(), name
    curves = pd.read_csv(run / "curves.csv")
    updates = curves[curves["kind"] == "update"]
    episodes = curves[curves["kind"] == "episode"]
    assert list(episodes["episode"]) == [0, 1, 2]
    assert len(updates) > 50
    # the learning rate, loss and gradient norm are logged at every update
    assert updates[["lr", "loss", "grad_norm", "update"]].notna().all().all()
    assert list(updates["update"]) == list(range(1, len(updates) + 1))
    assert episodes["eval_delay_s"].notna().all()
    assert result.best_eval_delay_s == pytest.approx(episodes["eval_delay_s"].min())


def test_ppo_trains_end_to_end(tiny: Scenario, tmp_path: Path) -> None:
    result = train(ppo_spec(), tiny, tmp_path / "ppo")
    curves = pd.read_csv(result.run / "curves.csv")
    updates = curves[curves["kind"] == "update"]
    # 60 samples an episode, batches of 32, 2 epochs: 4 updates after each episode
    assert len(updates) == 8
    assert updates["lr"].eq(3e-4).all()
    assert (result.run / "checkpoints" / "best.pt").is_file()


def test_same_spec_and_seed_give_identical_curves(tiny: Scenario, tmp_path: Path) -> None:
    a = train(dqn_spec(), tiny, tmp_path / "a")
    b = train(dqn_spec(), tiny, tmp_path / "b")
    pd.testing.assert_frame_equal(curves(a.run), curves(b.run))
    c = train(dqn_spec(seed=1), tiny, tmp_path / "c")
    assert not curves(a.run).equals(curves(c.run))


def test_resume_continues_where_training_stopped(tiny: Scenario, tmp_path: Path) -> None:
    spec = dqn_spec(episodes=4)
    whole = train(spec, tiny, tmp_path / "whole")
    resumed = interrupted_and_resumed(spec, tiny, tmp_path / "cut")
    assert resumed.episodes == 4
    pd.testing.assert_frame_equal(curves(whole.run), curves(resumed.run))


def test_ppo_same_spec_and_seed_give_identical_curves_and_weights(
    tiny: Scenario, tmp_path: Path
) -> None:
    a = train(ppo_spec(), tiny, tmp_path / "a")
    b = train(ppo_spec(), tiny, tmp_path / "b")
    pd.testing.assert_frame_equal(curves(a.run), curves(b.run))
    assert len(curves(a.run).query("kind == 'update'")) == 8
    wa, wb = policy_weights(a.run), policy_weights(b.run)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    c = train(ppo_spec(seed=1), tiny, tmp_path / "c")
    assert not curves(a.run).equals(curves(c.run))


def test_ppo_resume_equals_training_straight_through(tiny: Scenario, tmp_path: Path) -> None:
    # two episodes an update round: the interruption falls inside a round, whose first
    # episode's trajectories the checkpoint must carry over
    spec = ppo_spec(episodes=4, eval_every=1, ppo=PPOConfig(epochs=2, episodes_per_update=2))
    whole = train(spec, tiny, tmp_path / "whole")
    resumed = interrupted_and_resumed(spec, tiny, tmp_path / "cut", after=3)
    assert resumed.episodes == 4
    pd.testing.assert_frame_equal(curves(whole.run), curves(resumed.run))
    ww, wr = policy_weights(whole.run), policy_weights(resumed.run)
    for key in ww:
        assert torch.equal(ww[key], wr[key]), key


def test_checkpoints_load_with_weights_only(tiny: Scenario, tmp_path: Path) -> None:
    run = train(dqn_spec(episodes=1), tiny, tmp_path / "run").run
    for name in ("last.pt", "best.pt"):
        data = torch.load(run / "checkpoints" / name, weights_only=True)
        assert data["format"] == "greenphase.checkpoint"
        assert data["policy"]["tls_ids"] and "net" in data["policy"]


def test_divergence_stops_training_and_keeps_the_last_good_checkpoint(
    tiny: Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agents.dqn as dqn

    calls = {"n": 0}
    real = dqn.F.smooth_l1_loss

    def poisoned(q, target):
        calls["n"] += 1
        loss = real(q, target)
        return loss * float("nan") if calls["n"] > 60 else loss

    monkeypatch.setattr(dqn.F, "smooth_l1_loss", poisoned)
    result = train(dqn_spec(episodes=3), tiny, tmp_path / "run")
    assert "loss is nan" in result.stopped
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert last["episode"] == result.episodes < 3
    for tensor in last["policy"]["net"].values():
        assert torch.isfinite(tensor).all()


# ------------------------------------------------------------------ the CLI
def test_train_evaluate_and_compare_a_trained_run(tiny: Scenario, tmp_path: Path) -> None:
    run = tmp_path / "cli-run"
    args = ["--net", str(tiny.net_file), "--routes", str(tiny.route_files[0]), "--end", "300"]
    result = runner.invoke(app, ["train", *args, "--episodes", "2", "--eval-every", "1",
                                 "--hidden", "16", "--optimizer", "nesterov", "--lr", "0.01",
                                 "--schedule", "cosine", "--demand", "resample",
                                 "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert "trained 2 episodes" in result.stdout
    result = runner.invoke(app, ["evaluate", str(run), *args, "--seeds", "2", "--json",
                                 "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [s["controller"] for s in doc["summary"]] == ["fixed", f"trained:{run}"]
    assert manifest_kind(tmp_path / "eval") == "evaluate"
    # evaluate draws held-out demand by default, and says so in every record
    assert doc["demand"] == {"mode": "resample", "scale": 1.0, "bin_s": 60}
    assert doc["protocol"] == "greenphase"
    manifest = json.loads((tmp_path / "eval" / "manifest.json").read_text())
    assert manifest["demand"]["mode"] == "resample" and manifest["protocol"] == "greenphase"
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["demand"] == doc["demand"]
    result = runner.invoke(app, ["compare", *args, "-c", f"max-pressure,trained:{run}",
                                 "--seeds", "1", "--json", "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    assert manifest_kind(tmp_path / "cmp") == "compare"


def manifest_kind(folder: Path) -> str:
    """The command a results folder's manifest names."""
    return json.loads((folder / "manifest.json").read_text())["kind"]


def test_corrupt_and_foreign_checkpoints_are_refused(tiny: Scenario, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt" / "checkpoints"
    corrupt.mkdir(parents=True)
    (corrupt / "best.pt").write_bytes(b"\x00not a checkpoint at all")
    foreign = tmp_path / "foreign" / "checkpoints"
    foreign.mkdir(parents=True)
    torch.save({"model": torch.zeros(3)}, foreign / "best.pt")
    args = ["--net", str(tiny.net_file), "--routes", str(tiny.route_files[0]), "--end", "300"]
    for run, words in ((corrupt.parent, "unreadable checkpoint"),
                       (foreign.parent, "not a greenphase checkpoint"),
                       (tmp_path / "empty", "holds no trained policy")):
        for cmd in (["evaluate", str(run), *args],
                    ["compare", *args, "-c", f"trained:{run}"]):
            result = runner.invoke(app, cmd)
            assert result.exit_code == 2, result.output
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and words in lines[0], result.stderr


def test_a_policy_for_another_network_is_refused(
    tiny: Scenario, grid2x2_short: Scenario, tmp_path: Path
) -> None:
    run = train(dqn_spec(episodes=1), tiny, tmp_path / "run").run
    args = ["--net", str(grid2x2_short.net_file), "--routes", str(grid2x2_short.route_files[0]),
            "--end", "300"]
    result = runner.invoke(app, ["compare", *args, "-c", f"trained:{run}"])
    assert result.exit_code == 2, result.output
    assert "was trained on network" in result.stderr


def test_an_existing_run_is_neither_overwritten_nor_mixed(tiny: Scenario, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "--net", str(tiny.net_file), "--routes", str(tiny.route_files[0]),
            "--end", "300", "--episodes", "1", "--hidden", "8", "--out", str(run)]
    assert runner.invoke(app, args).exit_code == 0
    before = (run / "checkpoints" / "last.pt").read_bytes()
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "already holds a training run" in result.stderr
    assert (run / "checkpoints" / "last.pt").read_bytes() == before
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0


def test_bad_training_options_are_one_line_errors(tiny: Scenario) -> None:
    args = ["--net", str(tiny.net_file), "--routes", str(tiny.route_files[0])]
    for option, value, word in (("--optimizer", "adagrad", "adagrad"),
                                ("--schedule", "linear", "linear"),
                                ("--batch-mode", "huge", "huge"),
                                ("--lr", "-1", "lr"), ("--algo", "a3c", "a3c"),
                                ("--episodes", "0", "episodes")):
        assert_bad_input(runner.invoke(app, ["train", *args, option, value]), word)
