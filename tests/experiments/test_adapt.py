"""greenphase adapt on a tiny network: versions, promotion, rollback, errors, determinism."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tomllib
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from agents.dqn import DQNConfig
from agents.optim import OptimConfig
from experiments.adapt import AdaptSettings, adapt_run, verdict
from experiments.cli import app
from experiments.options import ScenarioOptions
from experiments.train import TrainSpec, train
from networks import Scenario
from tests.conftest import assert_bad_input

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(grid1x1: Scenario) -> Scenario:
    """One signal, five simulated minutes: 60 decisions an episode."""
    return dataclasses.replace(grid1x1, end=300)


@pytest.fixture(scope="module")
def deployed(tiny: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained DQN run: the policy adapt starts from."""
    spec = TrainSpec(algo="dqn", episodes=2, eval_every=2, hidden=(16,),
                     dqn=DQNConfig(learning_starts=20, target_every=10, buffer_size=500),
                     optim=OptimConfig(batch_size=16))
    return train(spec, tiny, tmp_path_factory.mktemp("deployed") / "run").run


def where(scenario: Scenario) -> ScenarioOptions:
    return ScenarioOptions(net=scenario.net_file, routes=list(scenario.route_files),
                           end=scenario.end)


def cli_args(scenario: Scenario) -> list[str]:
    return ["--net", str(scenario.net_file), "--routes", str(scenario.route_files[0]),
            "--end", str(scenario.end)]


SETTINGS = AdaptSettings(episodes=1, seeds=2)


def negated(net: torch.nn.Module) -> None:
    """Every weight times -1: the policy picks the phases it values least."""
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(-1)


def poisoned(net: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(float("nan"))


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def read_toml(path: Path) -> dict:
    return tomllib.loads(path.read_text())


DRIFT = ["--drift", "growth=+30%@1h", "--hours", "2"]


@pytest.fixture(scope="module")
def adapted(deployed: Path, tiny: Scenario, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[Path, dict]:
    """One adaptation by the command line: the folder and its --json document."""
    out = tmp_path_factory.mktemp("adapted") / "adapt"
    result = runner.invoke(app, ["adapt", str(deployed), *cli_args(tiny), "--episodes", "1",
                                 "--seeds", "2", *DRIFT, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_versions_layout_history_and_a_usable_deployed_version(
        deployed: Path, tiny: Scenario, adapted: tuple[Path, dict], tmp_path: Path) -> None:
    out, doc = adapted
    history = read(out / "adapt.json")
    assert history["deployed"] == doc["deployed"] in ("v0", "v1")
    assert [h["step"] for h in history["history"]] == [0, 1]
    assert history["history"][1]["candidate"] == "v1"
    assert history["settings"]["optim"]["optimizer"] == "momentum"
    # recent traffic: the conditions after the change, one base period, resampled
    assert history["recent"]["label"].startswith("growth=+30%@0")
    assert history["recent"]["demand"]["mode"] == "resample"
    assert (history["recent"]["begin_s"], history["recent"]["end_s"]) == (0, 300)
    v0, v1 = read(out / "versions/v0/version.json"), read(out / "versions/v1/version.json")
    assert "parent" not in v0 and v1["parent"] == "v0"
    assert v1["status"] in ("promoted", "rejected") and v1["reason"]
    assert v1["training"]["episodes"] == 1 and v1["training"]["updates"] > 0
    assert v1["training"]["replay"] == "kept" and v1["training"]["wall_s"] > 0
    # deployed and candidate ran the same tuning seeds, recorded per seed
    seeds = [run["seed"] for run in v1["shadow"][0]["runs"]]
    assert seeds == [run["seed"] for run in v0["shadow"][0]["runs"]] == [21000, 21001]
    # v0 is the deployed policy as received
    assert (out / "versions/v0/checkpoints/best.pt").read_bytes() == (
        deployed / "checkpoints/best.pt").read_bytes()
    if (deployed / "reference.json").is_file():  # what `greenphase monitor` compares with
        assert (out / "versions/v0/reference.json").read_bytes() == (
            deployed / "reference.json").read_bytes()
    for version in ("v0", "v1"):
        assert (out / "versions" / version / "spec.toml").is_file()
    # the deployed version runs as a controller
    result = runner.invoke(app, ["compare", *cli_args(tiny), "-c", doc["controller"],
                                 "--seeds", "1", "--json", "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("tamper", [negated, poisoned])
def test_a_candidate_made_worse_on_purpose_is_never_promoted(
        deployed: Path, tiny: Scenario, tmp_path: Path, tamper) -> None:
    result = adapt_run(deployed, where(tiny), "", 8, SETTINGS, out=tmp_path / "adapt",
                       tamper=tamper)
    assert result.deployed == "v0"
    doc = read(tmp_path / "adapt" / "adapt.json")
    assert doc["deployed"] == "v0" and doc["history"][-1]["decision"] == "rejected"
    v1 = read(tmp_path / "adapt/versions/v1/version.json")
    assert v1["status"] == "rejected"
    if tamper is poisoned:
        assert v1["reason"] == "its weights are not all finite numbers" and not v1["shadow"]
    else:
        assert "not better by the margin" in v1["reason"]
        assert v1["shadow"][0]["mean_delay_s"] > 0
    # the rejected candidate is kept beside the deployed one
    assert (tmp_path / "adapt/versions/v1/checkpoints/best.pt").is_file()
    assert result.controller.endswith("versions/v0")


def test_a_policy_without_a_replay_buffer_fills_a_fresh_one(
        tiny: Scenario, adapted: tuple[Path, dict], tmp_path: Path) -> None:
    received = adapted[0] / "versions" / "v0"  # its policy only, no last.pt
    assert not (received / "checkpoints" / "last.pt").exists()
    adapt_run(received, where(tiny), "", 8, SETTINGS.replace(seeds=1), out=tmp_path / "a")
    v1 = read(tmp_path / "a/versions/v1/version.json")
    assert v1["training"]["replay"] == "fresh" and v1["training"]["updates"] > 0
    spec = read_toml(tmp_path / "a/versions/v1/spec.toml")
    assert spec["dqn"]["learning_starts"] == 20  # the deployed run's: filled first
    assert spec["dqn"]["epsilon_start"] == spec["dqn"]["epsilon_end"] == 0.05


def test_same_seeds_same_result(deployed: Path, tiny: Scenario, adapted: tuple[Path, dict],
                                tmp_path: Path) -> None:
    adapt_run(deployed, where(tiny), "growth=+30%@1h", 2, SETTINGS, out=tmp_path / "again")

    def outcome(folder: Path) -> tuple:
        v1 = read(folder / "versions/v1/version.json")
        weights = torch.load(folder / "versions/v1/checkpoints/best.pt",
                             weights_only=True)["policy"]["net"]
        return (v1["status"], v1["reason"], [r["mean_delay_s"] for r in v1["shadow"][0]["runs"]],
                {k: v.tolist() for k, v in weights.items()})

    assert outcome(tmp_path / "again") == outcome(adapted[0])


def test_each_step_starts_from_the_version_deployed_then(
        deployed: Path, tiny: Scenario, tmp_path: Path) -> None:
    result = adapt_run(deployed, where(tiny), "", 8, SETTINGS.replace(seeds=1, steps=2),
                       out=tmp_path / "a")
    history = read(tmp_path / "a" / "adapt.json")["history"]
    assert [h.get("candidate") for h in history] == [None, "v1", "v2"]
    v2 = read(tmp_path / "a/versions/v2/version.json")
    assert v2["parent"] == history[1]["deployed"]  # v1 if it was promoted, else v0
    assert v2["shadow"][0]["seeds"] == [22000]  # each step judges on seeds of its own
    assert result.deployed == history[2]["deployed"]


def test_verdict_needs_the_margin() -> None:
    assert verdict(90.0, 100.0, 0.02)[0]
    assert not verdict(99.0, 100.0, 0.02)[0]
    assert not verdict(float("nan"), 100.0, 0.02)[0]
    assert "margin 2.0%" in verdict(99.0, 100.0, 0.02)[1]


def test_no_overwrite_without_the_flag(deployed: Path, tiny: Scenario,
                                      adapted: tuple[Path, dict], tmp_path: Path) -> None:
    out = tmp_path / "adapt"
    shutil.copytree(adapted[0], out)
    args = ["adapt", str(deployed), *cli_args(tiny), "--episodes", "1", "--seeds", "1",
            "--out", str(out)]
    before = (out / "adapt.json").read_bytes()
    assert_bad_input(runner.invoke(app, args), "already holds", "--overwrite")
    assert (out / "adapt.json").read_bytes() == before
    result = runner.invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert read(out / "adapt.json")["recent"]["label"].startswith("stationary")
    assert read(out / "versions/v1/version.json")["shadow"][0]["seeds"] == [21000]
    # a folder of another command's results is refused even with --overwrite
    assert_bad_input(runner.invoke(app, [*args[:-1], str(deployed), "--overwrite"]),
                     "training run")


def test_bad_input_is_one_line(deployed: Path, tiny: Scenario, tmp_path: Path) -> None:
    args = cli_args(tiny)
    (tmp_path / "empty").mkdir()
    ppo = train(TrainSpec(algo="ppo", episodes=1, hidden=(8,)), tiny, tmp_path / "ppo").run
    cases = [
        (["adapt", str(tmp_path / "empty"), *args], "holds no trained policy"),
        (["adapt", str(ppo), *args], "adapt continues DQN policies"),
        (["adapt", str(deployed), *args, "--margin", "1.5"], "margin"),
        (["adapt", str(deployed), *args, "--margin", "-0.1"], "margin"),
        (["adapt", str(deployed), *args, "--lr", "0"], "lr"),
        (["adapt", str(deployed), *args, "--episodes", "0"], "episodes"),
        (["adapt", str(deployed), "--network", "cologne1"], "network"),
        (["adapt", str(deployed), *args, "--drift", "closure=nosuchedge@1h"], "nosuchedge"),
        (["adapt", str(deployed), *args, "--drift", "growth=+30%@9h"], "9h"),
        (["adapt", str(deployed), *args, "--drift", "rain=+1@1h"], "rain"),
        (["adapt", str(deployed), *args, "--hours", "0"], "hours"),
    ]
    for cmd, word in cases:
        assert_bad_input(runner.invoke(app, [*cmd, "--out", str(tmp_path / "x")]), word)
    assert not (tmp_path / "x").exists()


def test_adapt_check_measures_the_three_policies_after_the_change(
        deployed: Path, tiny: Scenario, tmp_path: Path) -> None:
    out = tmp_path / "check"
    result = runner.invoke(app, ["adapt-check", str(deployed), *cli_args(tiny),
                                 "--drift", "growth=+30%@150s", "--hours", "0.125",
                                 "--last-hours", "0.05", "--episodes", "1", "--seeds", "1",
                                 "--workers", "2", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc == read(out / "acceptance.json")
    for name in ("deployed", "adapted", "scratch"):  # kept, for a later call to reuse
        assert read(out / "measured" / f"{name}.json")["runs"] == doc["policies"][name]["runs"]
    assert set(doc["policies"]) == {"deployed", "adapted", "scratch"}
    assert doc["window_s"] == 180 and doc["seeds"] == [0]
    for figure in doc["policies"].values():
        assert figure["late_delay_s"] > 0 and figure["runs"][0]["late_vehicles"] > 0
    # the scratch policy is trained with the deployed run's settings, on the recent traffic
    scratch = read(out / "adapt" / "adapt.json")
    assert doc["policies"]["scratch"]["cost"]["episodes"] == 2
    assert scratch["recent"]["label"].startswith("growth=+30%@0")
    delays = {k: v["late_delay_s"] for k, v in doc["policies"].items()}
    assert doc["accepted"] == (delays["adapted"] < delays["deployed"]
                               and delays["adapted"] <= 1.1 * delays["scratch"])
