"""``greenphase run SPEC`` end to end, and the one results layout read back by report and replay."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from experiments import layout, store
from experiments.cli import app
from experiments.replay import plan as replay_plan
from experiments.report import ReportError, load_runs
from experiments.spec import load
from networks import Scenario
from simulator.metrics import KPI_NAMES

runner = CliRunner()

SPEC = """
name = "small"
network = "grid-1x1"
end = 300
controllers = ["fixed", "max-pressure"]
seeds = 2
[signals]
decision_interval = 10.0
"""


@pytest.fixture(scope="module")
def ran(grid1x1: Scenario, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """``greenphase run`` of a small spec, with its JSON document."""
    folder = tmp_path_factory.mktemp("run")
    spec = folder / "small.toml"
    spec.write_text(SPEC)
    result = runner.invoke(app, ["run", str(spec), "--out", str(folder / "out"), "--workers",
                                 "2", "--json", "--fail-under", "max-pressure:seeds>=2"])
    assert result.exit_code == 0, result.output
    return folder, json.loads(result.stdout)


def test_run_prints_one_json_document_and_fills_the_store(ran: tuple[Path, dict]) -> None:
    folder, doc = ran
    out = folder / "out"
    assert (doc["name"], doc["runs"], doc["finished"], doc["failed"]) == ("small", 4, 4, 0)
    assert [(r["controller"], r["seeds"]) for r in doc["summary"]] == [("fixed", 2),
                                                                        ("max-pressure", 2)]
    assert doc["summary"][0]["delay_vs_fixed_pct"] == 0.0
    assert [g["passed"] for g in doc["gates"]] == [True]
    rows = store.read(out)
    assert len(rows) == 4 and set(rows["status"]) == {"ok"}
    assert sorted(rows["hash"]) == sorted(u.hash for u in load(folder / "small.toml").units)
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["layout"], manifest["kind"], manifest["name"]) == (
        layout.LAYOUT_VERSION, "run", "small")
    assert [r["controller"] for r in manifest["runs"]] == ["fixed"] * 2 + ["max-pressure"] * 2
    assert load(out / "spec.toml").units == load(folder / "small.toml").units
    for name in ("metrics.parquet", "summary.json", "report.md", "plots/delay.png", "log.txt"):
        assert (out / name).is_file(), name


def test_run_prints_the_table_and_resumes(ran: tuple[Path, dict]) -> None:
    folder, doc = ran
    result = runner.invoke(app, ["run", str(folder / "small.toml"), "--out",
                                 str(folder / "out"), "--resume"])
    assert result.exit_code == 0, result.output
    assert "max-pressure" in result.stdout and "report.md" in result.stdout
    assert "resuming: 4 of 4 runs finished before" in result.stderr


def test_replay_picks_a_run_of_a_results_folder(ran: tuple[Path, dict]) -> None:
    folder, _ = ran
    target = replay_plan(folder / "out", controller="max-pressure", seed=1)
    assert target.controller == "max-pressure" and target.options.decision_interval == 10.0
    assert (target.scenario.name, target.scenario.end) == ("grid-1x1", 300)
    row = store.read(folder / "out").query("controller == 'max-pressure' and seed == 1")
    assert target.measured == {k: float(row.iloc[0][k]) for k in KPI_NAMES}


def test_a_compare_folder_of_the_old_layout_still_reads(tmp_path: Path) -> None:
    old = tmp_path / "old-compare"
    old.mkdir()
    runs = pd.DataFrame([{"controller": c, "seed": 0, **dict.fromkeys(KPI_NAMES, 2.0),
                          "mean_delay_s": d, "wall_s": 1.0}
                         for c, d in (("fixed", 40.0), ("max-pressure", 30.0))])
    runs.to_parquet(old / "metrics.parquet")
    (old / "summary.json").write_text(json.dumps({"network": "cologne1", "begin_s": 0,
                                                  "end_s": 3600}))
    (old / "spec.toml").write_text('command = "compare"\nnetwork = "cologne1"\n'
                                   'controllers = ["fixed", "max-pressure"]\n')
    rows = load_runs(old)
    assert list(rows["controller"]) == ["fixed", "max-pressure"]
    assert list(rows["mean_delay_s"]) == [40.0, 30.0]
    assert replay_plan(old, controller="max-pressure").measured["mean_delay_s"] == 30.0


@pytest.mark.parametrize(("files", "words"), [
    ({"robustness.csv": "", "metrics.parquet": ""}, "robustness folder of the old layout"),
    ({"study.csv": "", "summary.csv": ""}, "study folder of the old layout"),
    ({"checkpoints/last.pt": ""}, "training run"),
])
def test_folders_of_other_layouts_are_named_in_one_line(tmp_path: Path, files: dict[str, str],
                                                        words: str) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    with pytest.raises(ReportError, match=words):
        load_runs(tmp_path)
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.stderr


def test_a_sweep_folder_of_the_old_layout_still_reads(ran: tuple[Path, dict],
                                                      tmp_path: Path) -> None:
    folder, doc = ran
    old = tmp_path / "old-sweep"
    shutil.copytree(folder / "out", old)
    manifest = json.loads((old / "manifest.json").read_text())
    (old / "manifest.json").unlink()
    (old / "plan.json").write_text(json.dumps({"name": "small", "runs": manifest["runs"]}))
    assert layout.read_manifest(old)["kind"] == "sweep"
    rows = load_runs(old)
    assert list(rows["hash"]) == [r["hash"] for r in manifest["runs"]]
    result = runner.invoke(app, ["report", str(old)])
    assert result.exit_code == 0, result.output
    assert (old / "report.md").read_text().startswith("# small\n")


def test_compare_replaces_a_comparison_but_not_a_sweep(ran: tuple[Path, dict],
                                                       tmp_path: Path) -> None:
    args = ["compare", "--network", "grid-1x1", "--end", "120", "-c", "fixed", "--seeds", "1"]
    for flags in ([], ["--overwrite"]):  # a comparison's folder takes the next with --overwrite
        result = runner.invoke(app, [*args, "--out", str(tmp_path / "cmp"), *flags])
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 2 and "--overwrite" in result.stderr, result.output
    assert len(store.read(tmp_path / "cmp")) == 1
    result = runner.invoke(app, [*args, "--out", str(ran[0] / "out")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds the runs of `greenphase run`" in lines[0], result.stderr
