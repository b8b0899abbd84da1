"""The optimizer study on a tiny network: files, rows, summary, plot, JSON, bad input."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from agents.dqn import DQNConfig
from agents.optim import ConfigError, OptimConfig
from experiments.cli import app
from experiments.study import (
    SETTINGS,
    SGD_LR,
    RunOutcome,
    Setting,
    episodes_to_reach,
    reach_label,
    run_spec,
    study,
    summarise,
)
from experiments.train import TrainSpec
from networks import Scenario

runner = CliRunner()
PAIRS = [(o, s) for o in ("sgd", "momentum", "nesterov", "adam") for s in ("constant", "cosine")]


@pytest.fixture(scope="module")
def tiny(grid1x1: Scenario) -> Scenario:
    """One signal, five simulated minutes: 60 decisions an episode."""
    return dataclasses.replace(grid1x1, end=300)


def tiny_base() -> TrainSpec:
    return TrainSpec(hidden=(8,), dqn=DQNConfig(learning_starts=20, target_every=10,
                                                buffer_size=500),
                     optim=OptimConfig(batch_size=16))


def test_the_settings_are_four_optimizers_by_two_schedules() -> None:
    assert [(s.optimizer, s.schedule) for s in SETTINGS] == PAIRS
    assert {s.lr for s in SETTINGS if s.optimizer != "adam"} == {SGD_LR}
    assert [s.lr for s in SETTINGS if s.optimizer == "adam"] == [1e-3, 1e-3]
    spec = run_spec(tiny_base(), Setting("nesterov", "cosine", 0.01), seed=2, episodes=4)
    assert (spec.algo, spec.seed, spec.episodes, spec.eval_every) == ("dqn", 2, 4, 1)
    assert (spec.optim.optimizer, spec.optim.schedule, spec.optim.lr) == ("nesterov", "cosine",
                                                                           0.01)
    assert spec.optim.batch_size == 16 and spec.hidden == (8,)


def test_study_writes_runs_summary_and_plot(tiny: Scenario, tmp_path: Path) -> None:
    folder = tmp_path / "study"
    seen: list[RunOutcome] = []
    result = study(tiny, folder, seeds=1, episodes=2, workers=2, base=tiny_base(),
                   on_run=seen.append)
    assert len(seen) == 8
    for name in ("study.csv", "summary.csv", "plots/learning_curves.png", "spec.toml",
                 "manifest.json", "log.txt"):
        assert (folder / name).is_file(), name
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["kind"] == "study" and len(manifest["runs"]) == 1 + 8
    assert manifest["runs"][0]["controller"] == "max-pressure"
    for run in manifest["runs"][1:]:
        assert (folder / "training" / run["hash"] / "checkpoints" / "last.pt").is_file()

    runs = pd.read_csv(folder / "study.csv")
    assert list(runs.columns) == ["setting", "optimizer", "schedule", "lr", "seed", "episode",
                                  "eval_delay_s", "wall_s"]
    assert len(runs) == 8 * 2
    assert runs.groupby("setting")["episode"].apply(list).tolist() == [[0, 1]] * 8
    assert runs["eval_delay_s"].notna().all()  # every episode is evaluated

    summary = pd.read_csv(folder / "summary.csv", keep_default_na=False)
    assert list(zip(summary["optimizer"], summary["schedule"])) == PAIRS
    assert (summary["seeds"] == 1).all() and (summary["error"] == "").all()
    last = runs[runs["episode"] == 1].set_index("setting")["eval_delay_s"]
    for row in result.summary.to_dict("records"):
        assert row["final_delay_s"] == pytest.approx(last[row["setting"]])
        assert row["final_ci95_s"] == 0.0
        assert row["best_delay_s"] <= row["final_delay_s"]
        assert row["reach"] == "never" or row["reach"].startswith("1/1 seeds, ")
    assert result.reference_delay_s > 0 and not result.reference_error


def test_episodes_to_reach_and_labels() -> None:
    assert episodes_to_reach([90.0, 50.0, 30.0, 20.0], 40.0) == 3
    assert episodes_to_reach([90.0, math.nan, 10.0], 40.0) == 3
    assert episodes_to_reach([90.0, 50.0], 40.0) is None
    assert reach_label(2, 3, 7.5) == "2/3 seeds, 7.5"
    assert reach_label(0, 3, math.nan) == "never"


def test_a_failed_run_is_recorded_not_fatal() -> None:
    ok, bad = SETTINGS[0], SETTINGS[1]
    eps = [{"episode": 0, "eval_delay_s": 50.0, "wall_s": 1.0},
           {"episode": 1, "eval_delay_s": 30.0, "wall_s": 2.0}]
    outcomes = [RunOutcome(ok, 0, eps, 2.0), RunOutcome(ok, 1, eps[:1], 1.0, "diverged"),
                RunOutcome(bad, 0, [], math.nan, "SumoError: boom"),
                RunOutcome(bad, 1, [], math.nan, "SumoError: boom")]
    summary = summarise(outcomes, [ok, bad], seeds=2, reference=40.0).set_index("setting")
    assert summary.loc[ok.name, "seeds"] == 1
    assert summary.loc[ok.name, "final_delay_s"] == 30.0
    assert summary.loc[ok.name, "reach"] == "1/2 seeds, 2.0"
    assert summary.loc[ok.name, "error"] == "seed 1: diverged"
    assert summary.loc[bad.name, "seeds"] == 0 and math.isnan(summary.loc[bad.name, "wall_s"])
    assert summary.loc[bad.name, "reach"] == "never"
    assert "seed 0: SumoError: boom" in summary.loc[bad.name, "error"]


def test_bad_counts_are_refused(tiny: Scenario, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="seeds"):
        study(tiny, tmp_path / "s", seeds=0)


def test_cli_study_json(tiny: Scenario, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = runner.invoke(app, ["study", "--net", str(tiny.net_file), "--routes",
                                 str(tiny.route_files[0]), "--end", "300", "--episodes", "1",
                                 "--seeds", "1", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["network"] == tiny.net_file.name.removesuffix(".net.xml")
    assert doc["reference_delay_s"] > 0
    assert [(s["optimizer"], s["schedule"]) for s in doc["settings"]] == PAIRS
    assert (out / "plots" / "learning_curves.png").is_file()


@pytest.mark.parametrize("args, word", [(["--seeds", "0"], "--seeds"),
                                        (["--workers", "0"], "--workers"),
                                        (["--episodes", "0"], "--episodes")])
def test_cli_bad_input_is_one_line(args: list[str], word: str) -> None:
    result = runner.invoke(app, ["study", *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and word in lines[0], result.stderr
