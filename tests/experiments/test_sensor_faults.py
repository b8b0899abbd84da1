"""Faults and cleaning end to end: training with them, trained:RUN, robustness, bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from agents.dqn import DQNConfig
from agents.optim import ConfigError, OptimConfig
from agents.trained import TrainedController
from experiments.cli import app
from experiments.robustness import robustness
from experiments.train import TrainSpec, train
from networks import Scenario
from tests.conftest import assert_bad_input, curves, interrupted_and_resumed

runner = CliRunner()
FAULTS = "noise=0.1,dropout=0.2"


@pytest.fixture(scope="module")
def tiny(grid1x1: Scenario) -> Scenario:
    """One signal, five simulated minutes: 60 decisions an episode."""
    return dataclasses.replace(grid1x1, end=300)


def tiny_args(sc: Scenario) -> list[str]:
    return ["--net", str(sc.net_file), "--routes", str(sc.route_files[0]), "--end", "300"]


def spec(**changes) -> TrainSpec:
    base = TrainSpec(
        algo="dqn", episodes=2, eval_every=1, hidden=(16,), faults=FAULTS, cleaning="zero-flag",
        normalize=True, dqn=DQNConfig(learning_starts=20, target_every=10, buffer_size=500),
        optim=OptimConfig(batch_size=16),
    )
    return base.replace(**changes)


@pytest.fixture(scope="module")
def robust_run(tiny: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A policy trained under faults with zero-flag cleaning and normalisation."""
    return train(spec(), tiny, tmp_path_factory.mktemp("robust") / "run").run


# ------------------------------------------------------------------ the spec
def test_train_spec_round_trips_the_sensor_settings() -> None:
    s = spec(cleaning="last")
    data = s.to_dict()
    sensors = data["simulation"]["faults"], data["simulation"]["cleaning"], data["normalize"]
    assert sensors == (FAULTS, "last", True)
    assert TrainSpec.from_dict(data) == s
    old = {k: v for k, v in data.items() if k not in ("simulation", "normalize")}
    assert TrainSpec.from_dict(old).faults == "" and not TrainSpec.from_dict(old).normalize
    flat = {**old, "faults": FAULTS, "cleaning": "last", "normalize": True}  # older runs' format
    assert TrainSpec.from_dict(flat) == s


@pytest.mark.parametrize(
    ("changes", "words"),
    [({"faults": "dropout=1.5"}, ["faults", "dropout", "1.5"]),
     ({"faults": "hail=1"}, ["faults", "unknown fault kind", "hail"]),
     ({"cleaning": "mop"}, ["cleaning", "mop"])],
)
def test_train_spec_refuses_bad_sensor_settings(changes: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        spec(**changes)
    for word in words:
        assert word in str(info.value)


# ------------------------------------------------------------------ trained policies
def test_the_checkpoint_holds_the_normalisation_and_trained_run_applies_it(
    robust_run: Path,
) -> None:
    for name in ("best.pt", "last.pt"):
        policy = torch.load(robust_run / "checkpoints" / name, weights_only=True)["policy"]
        norm = policy["obs_norm"]
        assert set(norm) == {"mean", "std", "count"} and norm["count"] > 0
        assert norm["mean"].shape == norm["std"].shape == (policy["obs_dims"][0],)
        assert policy["missing_flags"] and policy["cleaning"] == "zero-flag"
    ctrl = TrainedController(robust_run)
    assert ctrl.normalizer is not None and ctrl.normalizer.frozen
    saved = torch.load(robust_run / "checkpoints" / "best.pt", weights_only=True)["policy"]
    torch.testing.assert_close(ctrl.normalizer.mean.float(), saved["obs_norm"]["mean"])


def test_a_normalised_policy_evaluates_through_trained_run_with_and_without_faults(
    robust_run: Path, tiny: Scenario, tmp_path: Path
) -> None:
    for label, extra in (("exact", []), ("faulty", ["--faults", FAULTS, "--cleaning",
                                                      "zero-flag"])):
        result = runner.invoke(app, ["evaluate", str(robust_run), *tiny_args(tiny), "--seeds",
                                     "1", "--out", str(tmp_path / label), "--json", *extra])
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        trained = [r for r in doc["runs"] if r["controller"].startswith("trained:")]
        assert len(trained) == 1 and trained[0]["vehicles"] > 0
    # the faulty comparison wrote its sensors into the spec
    assert 'faults = "noise=0.1,dropout=0.2"' in (tmp_path / "faulty" / "spec.toml").read_text()


def test_resume_continues_the_running_statistics(tiny: Scenario, tmp_path: Path) -> None:
    s = spec(episodes=3, cleaning="last")
    whole = train(s, tiny, tmp_path / "whole")
    resumed = interrupted_and_resumed(s, tiny, tmp_path / "cut")
    pd.testing.assert_frame_equal(curves(whole.run), curves(resumed.run))
    a, b = (torch.load(r.run / "checkpoints" / "last.pt", weights_only=True)["policy"]["obs_norm"]
            for r in (whole, resumed))
    torch.testing.assert_close(a, b)


# ------------------------------------------------------------------ robustness
def test_robustness_runs_three_controllers_per_rate_and_writes_the_plot(
    robust_run: Path, tiny: Scenario, tmp_path: Path
) -> None:
    folder = tmp_path / "out"
    result = robustness(tiny, f"trained:{robust_run}", [0.0, 0.5], [0], cleaning="zero-flag",
                        folder=folder)
    s = result.summary
    assert len(result.controllers) == 3 and result.controllers[:2] == ["fixed", "max-pressure"]
    assert len(s) == 6 and set(s["dropout"]) == {0.0, 0.5}
    fixed = s[s["controller"] == "fixed"]["mean_delay_s"]
    assert fixed.nunique() == 1, "fixed timing reads no sensor"
    assert (s[s["dropout"] == 0.0]["delay_vs_no_dropout_pct"] == 0).all()
    for name in ("manifest.json", "spec.toml", "metrics.parquet", "robustness.csv",
                 "summary.json", "plots/robustness.png"):
        assert (folder / name).is_file(), name
    assert len(pd.read_parquet(folder / "metrics.parquet")) == 6


def test_robustness_command_prints_json(robust_run: Path, tiny: Scenario, tmp_path: Path) -> None:
    result = runner.invoke(app, ["robustness", "--run", str(robust_run), *tiny_args(tiny),
                                 "--rates", "0,0.3", "--seeds", "1", "--faults", "noise=0.1",
                                 "--cleaning", "last", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["faults"] == "noise=0.1" and doc["cleaning"] == "last"
    assert {(r["dropout"], r["controller"].split(":")[0]) for r in doc["summary"]} == {
        (d, c) for d in (0.0, 0.3) for c in ("fixed", "max-pressure", "trained")}
    assert (tmp_path / "plots" / "robustness.png").is_file()


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("command", ["compare", "train", "evaluate"])
@pytest.mark.parametrize(
    ("option", "value", "words"),
    [("--faults", "gremlins=0.1", ["--faults", "unknown fault kind", "gremlins"]),
     ("--faults", "dropout=1.5", ["--faults", "dropout", "1.5"]),
     ("--cleaning", "mop", ["--cleaning", "mop"])],
)
def test_bad_sensor_options_are_one_line_and_exit_2(
    command: str, option: str, value: str, words: list[str], robust_run: Path, tiny: Scenario,
    tmp_path: Path,
) -> None:
    target = [str(robust_run)] if command == "evaluate" else []
    result = runner.invoke(app, [command, *target, *tiny_args(tiny), option, value,
                                 "--out", str(tmp_path / "out")])
    assert_bad_input(result, *words)


@pytest.mark.parametrize(
    ("args", "words"),
    [(["--rates", "0,1.5"], ["--rates", "dropout", "1.5"]),
     (["--rates", "0,lots"], ["--rates", "lots"]),
     (["--faults", "dropout=0.1"], ["--faults", "dropout"]),
     (["--faults", "hail=1"], ["unknown fault kind", "hail"]),
     (["--cleaning", "mop"], ["--cleaning", "mop"])],
)
def test_robustness_bad_input(args: list[str], words: list[str], robust_run: Path,
                              tiny: Scenario, tmp_path: Path) -> None:
    result = runner.invoke(app, ["robustness", "--run", str(robust_run), *tiny_args(tiny),
                                 *args, "--out", str(tmp_path)])
    assert_bad_input(result, *words)


def test_robustness_needs_a_trained_run(tmp_path: Path, tiny: Scenario) -> None:
    result = runner.invoke(app, ["robustness", "--run", str(tmp_path / "nothing"),
                                 *tiny_args(tiny)])
    assert_bad_input(result, "nothing")
