"""``greenphase benchmark``: its stages, the leaderboard, resuming, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from experiments.benchmark import TUNED, UNTUNED
from experiments.cli import app
from experiments.leaderboard import RESCO
from experiments.train import TrainResult, default_simulations
from tests.conftest import assert_bad_input

runner = CliRunner()
TINY = ["benchmark", "--smoke", "--networks", "grid-1x1", "--workers", "1"]


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A whole benchmark of one one-signal network, short horizon, a few episodes."""
    out = tmp_path_factory.mktemp("benchmark") / "b"
    result = runner.invoke(app, [*TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_every_stage_runs_and_the_leaderboard_has_every_controller(bench_dir: Path) -> None:
    state = json.loads((bench_dir / "benchmark.json").read_text())
    stages = state["stages"]["grid-1x1"]
    assert set(stages) == {*(f"tune-{c}" for c in TUNED), "dqn", "eval"}
    assert all(stage["wall_s"] >= 0 for stage in stages.values())
    assert 2 <= stages["dqn"]["episodes"] <= 4 and stages["dqn"]["calibration_s_per_episode"] > 0
    # one simulation per core; checkpoints scored on the tuning seeds (one under --smoke)
    assert stages["dqn"]["simulations"] == default_simulations()
    assert stages["dqn"]["tuning_seeds"] == 1
    spec = (bench_dir / "grid-1x1" / "dqn" / "spec.toml").read_text()
    assert f"simulations = {default_simulations()}\n" in spec
    # the schedules planned over what the calibration expects to fit, then the budget
    assert f"schedule_episodes = {stages['dqn']['schedule_episodes']}\n" in spec
    assert "budget_s = 1800.0\n" in spec and "episodes = 4\n" in spec
    for controller in TUNED:
        assert (bench_dir / "grid-1x1" / f"tune-{controller}" / "params.toml").is_file()
    board = pd.read_csv(bench_dir / "leaderboard.csv")
    expected = [*UNTUNED, *(f"tuned {c}" for c in TUNED), "DQN"]
    assert board["controller"].tolist() == expected
    assert (board["seeds"] == 2).all() and (board["mean_delay_s"] > 0).all()
    learned = board[board["controller"] == "DQN"].iloc[0]
    assert learned["train_episodes"] == stages["dqn"]["episodes"]
    assert learned["train_simulations"] == default_simulations()
    assert board["resco_best_learned_s"].isna().all()  # not a RESCO network
    text = (bench_dir / "leaderboard.md").read_text()
    assert "| grid-1x1 |" in text and "held-out" in text and "avg_timeLoss.py" in text
    assert ("at once" in text) == (default_simulations() > 1)
    assert (bench_dir / "leaderboard.png").stat().st_size > 0


def test_resume_skips_what_is_done_and_settings_must_match(bench_dir: Path) -> None:
    before = (bench_dir / "leaderboard.csv").read_text()
    again = runner.invoke(app, [*TINY, "--out", str(bench_dir), "--resume"])
    assert again.exit_code == 0, again.output
    assert again.output.count("already done") == len(TUNED) + 2
    assert (bench_dir / "leaderboard.csv").read_text() == before
    refused = runner.invoke(app, [*TINY, "--out", str(bench_dir)])
    assert_bad_input(refused, "--resume")
    other = runner.invoke(app, [*TINY, "--out", str(bench_dir), "--resume", "--seeds", "7"])
    assert_bad_input(other, "seeds")
    assert (bench_dir / "leaderboard.csv").read_text() == before


def test_overwrite_clears_what_a_benchmark_wrote_and_nothing_else(
        bench_dir: Path, tmp_path: Path) -> None:
    import shutil

    from experiments.benchmark import plan_benchmark, read_state

    copy = tmp_path / "b"
    shutil.copytree(bench_dir, copy)
    (copy / "notes.txt").write_text("mine")
    (copy / "grid-1x1" / "mine.txt").write_text("mine too")
    plan = plan_benchmark(networks=["grid-1x1"], folder=copy, smoke=True, overwrite=True)
    assert read_state(plan.folder) == {}  # every stage runs again
    assert sorted(p.name for p in copy.iterdir()) == ["grid-1x1", "notes.txt"]
    assert [p.name for p in (copy / "grid-1x1").iterdir()] == ["mine.txt"]


@pytest.mark.parametrize(("simulations", "calls", "seconds"), [
    # one at a time: 2 training episodes and 2 evaluation episodes, 2.5 s each (10 s);
    # a run's episode costs one, and 2 evaluation episodes come every fifth episode
    (1, (2, 1, 2), 2.5 + 2 * 2.5 / 5),
    # two at once: a round of both training episodes, one of both evaluation seeds (5 s each)
    (2, (2, 2, 2), 5.0 / 2 + 5.0 / 5),
    # four at once: a round of four training episodes, then one of the two seeds
    (4, (4, 4, 2), 5.0 / 4 + 5.0 / 5),
])
def test_the_calibration_times_rounds_of_simulations(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, simulations: int,
        calls: tuple[int, int, int], seconds: float) -> None:
    import experiments.train
    from experiments.benchmark import _seconds_per_episode, plan_benchmark

    seen = []

    def timed(spec, scenario, run, **_):  # noqa: ANN001, ANN202
        seen.append((spec.episodes, spec.simulation_count, len(spec.evaluation_seeds)))
        assert spec.eval_every == spec.episodes  # one evaluation, at the end
        return TrainResult(run, spec.episodes, 1.0, 10.0)

    monkeypatch.setattr(experiments.train, "train", timed)
    plan = plan_benchmark(networks=["grid-1x1"], folder=tmp_path / "b",
                          simulations=simulations)
    per_episode = _seconds_per_episode(plan, plan.scenario("grid-1x1"), "dqn",
                                       tmp_path / "b" / "grid-1x1" / "dqn")
    assert seen == [calls]
    assert per_episode == pytest.approx(seconds)


@pytest.mark.parametrize(("args", "words"), [
    (["--suite", "nope"], ("--suite", "nope")),
    (["--learners", "sac"], ("--learners", "sac")),
    (["--networks", "atlantis"], ("atlantis",)),
    (["--networks", ""], ("--networks", "empty")),  # not the whole suite
    (["--networks", " , "], ("--networks", "empty")),
    (["--learners", ","], ("--learners", "empty")),
    (["--protocol", "nope"], ("nope",)),
    (["--budget-min", "0"], ("--budget-min",)),
])
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], words: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*TINY, *args, "--out", str(tmp_path / "b")])
    assert_bad_input(result, *words)
    assert not (tmp_path / "b" / "benchmark.json").exists()


def test_resco_figures_cover_the_suite() -> None:
    from experiments.benchmark import SUITES

    assert set(RESCO) == set(SUITES["resco"])
    assert RESCO["grid4x4"].fixed is None and RESCO["cologne8"].method == "IPPO"


def test_the_learned_policy_is_counted_seed_by_seed_and_network_by_network() -> None:
    from experiments.leaderboard import _counts, _paired_wins

    def run(controller: str, seed: int, delay: float) -> dict[str, object]:
        return {"controller": controller, "seed": seed, "mean_delay_s": delay, "status": "ok"}

    # the paired count shows the seed the learner jams on
    runs = pd.DataFrame([
        *(run("trained:b/n/dqn", s, d) for s, d in enumerate([10.0, 11.0, 90.0])),
        *(run("tuned:b/n/tune-max-pressure", s, d) for s, d in enumerate([20.0, 20.0, 50.0])),
        *(run("tuned:b/n/tune-actuated", s, d) for s, d in enumerate([5.0, 5.0, 5.0])),
        run("trained:b/n/dqn", 3, 1.0), run("max-pressure", 3, 99.0),  # seed 3: no tuned run
    ])
    assert _paired_wins(runs, "trained:b/n/dqn") == 2
    board = pd.DataFrame([
        {"network": "a", "controller": "tuned max-pressure", "mean_delay_s": 20.0,
         "resco_best_learned_s": 15.0},
        {"network": "a", "controller": "sotl", "mean_delay_s": 12.0, "resco_best_learned_s": 15.0},
        {"network": "a", "controller": "DQN", "mean_delay_s": 14.0, "resco_best_learned_s": 15.0},
        {"network": "b", "controller": "tuned max-pressure", "mean_delay_s": 30.0,
         "resco_best_learned_s": None},
        {"network": "b", "controller": "DQN", "mean_delay_s": 31.0, "resco_best_learned_s": None},
    ])
    (line,) = _counts(board, {"DQN"}, "resco")
    assert "tuned max-pressure on 1 of 2 networks" in line
    assert "(tuned or not) on 0 of 2" in line
    assert "learned figure on 1 of 1 (protocol `resco`" in line


def test_an_interrupted_benchmark_keeps_the_leaderboard_of_the_networks_it_finished(
        bench_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from experiments import benchmark as bm

    copy = tmp_path / "b"
    shutil.copytree(bench_dir, copy)
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.png"):
        (copy / name).unlink()
    doc = json.loads((copy / "benchmark.json").read_text())
    del doc["stages"]["grid-1x1"]["eval"]  # its evaluation's results are there: it reruns fast
    (copy / "benchmark.json").write_text(json.dumps(doc))

    def interrupted() -> dict[str, object]:
        raise KeyboardInterrupt

    def fake_stages(plan: bm.Benchmark, network: str) -> list[bm.Stage]:
        if network == "grid-1x1":
            return [bm.Stage(network, "eval", lambda: {"learner": "dqn"})]
        return [bm.Stage(network, "tune-webster", interrupted)]

    monkeypatch.setattr(bm, "stages", fake_stages)
    plan = bm.plan_benchmark(networks=["grid-1x1", "grid-2x2"], folder=copy, smoke=True,
                             resume=True)
    with pytest.raises(KeyboardInterrupt):
        bm.run_benchmark(plan)
    board = pd.read_csv(copy / "leaderboard.csv")
    assert set(board["network"]) == {"grid-1x1"} and "DQN" in set(board["controller"])
    assert "| grid-1x1 |" in (copy / "leaderboard.md").read_text()
