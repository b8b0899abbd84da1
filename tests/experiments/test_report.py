"""Reports and CI gates: the summary over seeds, report.md and its plots, the gate syntax."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from experiments import gates, store
from experiments.cli import app
from experiments.report import load_runs, summarize, write_report
from experiments.stats import mean_ci95
from networks import Scenario
from simulator.metrics import KPI_NAMES

runner = CliRunner()

# mean delay by (network, controller, seed)
DELAYS = {
    ("alpha", "fixed"): [40.0, 44.0, 42.0],
    ("alpha", "max-pressure"): [30.0, 35.0, 31.0],
    ("alpha", "dqn"): [38.0, 36.0, 41.0],
    ("beta", "fixed"): [20.0, 22.0, 24.0],
    ("beta", "max-pressure"): [21.0, 23.0, 26.0],
    ("beta", "dqn"): [19.0, 18.0, 20.0],
}


def fake_store(folder: Path, *, failed: tuple[str, str, int] | None = None) -> Path:
    """A sweep folder with made-up runs: two networks, three controllers, three seeds."""
    runs = []
    with store.Store(folder) as st:
        for (network, controller), delays in DELAYS.items():
            for seed, delay in enumerate(delays):
                run_hash = f"{network}-{controller}-{seed}"
                runs.append({"hash": run_hash, "network": network, "cell": "",
                             "controller": controller, "setting": "", "seed": seed})
                row = {**runs[-1], "experiment": "fake", "status": "ok", "attempt": 1,
                       **dict.fromkeys(KPI_NAMES, 1.0), "mean_delay_s": delay,
                       "delay_over_time": json.dumps({"begin": 0, "bin_s": 60, "bins": [
                           [0.0, delay / 2, 10], [60.0, delay, 12], [120.0, delay * 1.5, 9]]})}
                curves = None
                if controller == "dqn":
                    curves = pd.DataFrame({"episode": [0, 1, 2], "return": [-3.0, -2.0, -1.0],
                                           "mean_delay_s": [90.0, 60.0, 45.0],
                                           "eval_delay_s": [80.0, 50.0, delay]})
                if failed == (network, controller, seed):
                    st.write_failure({**row, "status": "failed", "error": "SumoError: boom"})
                    st.write_failure({**row, "status": "failed", "attempt": 2,
                                      "error": "SumoError: boom again"})
                else:
                    st.write_run(row, curves=curves)
    (folder / "plan.json").write_text(json.dumps({"name": "fake", "runs": runs}))
    return folder


def test_summary_means_cis_and_delay_versus_fixed(tmp_path: Path) -> None:
    summary = summarize(load_runs(fake_store(tmp_path / "s")))
    assert list(zip(summary["network"], summary["controller"])) == [
        ("alpha", "fixed"), ("alpha", "max-pressure"), ("alpha", "dqn"),
        ("beta", "fixed"), ("beta", "max-pressure"), ("beta", "dqn")]
    row = summary.set_index(["network", "controller"]).loc[("alpha", "max-pressure")]
    mean, ci = mean_ci95(DELAYS[("alpha", "max-pressure")])
    assert row["seeds"] == 3 and row["failed"] == 0
    assert row["mean_delay_s"] == pytest.approx(mean) and row["ci95_delay_s"] == pytest.approx(ci)
    fixed = sum(DELAYS[("alpha", "fixed")]) / 3
    assert row["delay_vs_fixed_pct"] == pytest.approx((mean / fixed - 1) * 100)
    diffs = [a - b for a, b in zip(DELAYS[("alpha", "max-pressure")], DELAYS[("alpha", "fixed")])]
    assert row["ci95_vs_fixed_pct"] == pytest.approx(mean_ci95(diffs)[1] / fixed * 100)
    ref = summary.set_index(["network", "controller"]).loc[("beta", "fixed")]
    assert ref["delay_vs_fixed_pct"] == 0.0


def test_a_run_that_never_finished_counts_as_failed(tmp_path: Path) -> None:
    folder = fake_store(tmp_path / "s", failed=("beta", "dqn", 1))
    summary = summarize(load_runs(folder)).set_index(["network", "controller"])
    assert summary.loc[("beta", "dqn"), "seeds"] == 2
    assert summary.loc[("beta", "dqn"), "failed"] == 1
    assert summary.loc[("beta", "fixed"), "failed"] == 0


def test_report_writes_markdown_and_every_plot(tmp_path: Path) -> None:
    folder = fake_store(tmp_path / "s", failed=("beta", "dqn", 1))
    path = write_report(folder, extra="## Gates\n\nAll 1 passed.\n")
    text = path.read_text()
    assert text.startswith("# fake\n")
    assert "18 runs: 17 finished, 1 failed; 2 network(s)." in text
    assert "| alpha | max-pressure | 3 | 32.0 ± 6.6 | -23.8% ± 5.9 |" in text
    assert "## Failed runs" in text and "SumoError: boom again" in text
    assert "## Gates" in text
    for name in ("delay.png", "delay_vs_fixed.png", "delay_over_time.png",
                 "learning_curves.png"):
        plot = folder / "plots" / name
        assert plot.is_file() and plot.read_bytes()[:4] == b"\x89PNG", name
        assert f"(plots/{name})" in text


def test_cli_report_prints_the_summary_and_refuses_an_empty_folder(tmp_path: Path) -> None:
    folder = fake_store(tmp_path / "s")
    result = runner.invoke(app, ["report", str(folder)])
    assert result.exit_code == 0, result.output
    assert "max-pressure" in result.stdout and "report.md" in result.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["report", str(empty)])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "holds no results" in result.stderr


def test_report_of_a_compare_folder(grid1x1: Scenario, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["compare", "--net", str(grid1x1.net_file), "--routes",
                                 str(grid1x1.route_files[0]), "--end", "300",
                                 "--controllers", "max-pressure", "--seeds", "1",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = write_report(out).read_text()
    metrics = pd.read_parquet(out / "metrics.parquet").set_index("controller")
    delay = metrics.loc["max-pressure", "mean_delay_s"]
    assert f"{delay:.1f} ± 0.0" in text
    assert (out / "plots" / "delay_over_time.png").is_file()


# ------------------------------------------------------------------ gates
SUMMARY = pd.DataFrame([
    {"network": "alpha", "cell": "", "controller": "fixed", "label": "fixed", "seeds": 3,
     "failed": 0, "mean_delay_s": 42.0, "delay_vs_fixed_pct": 0.0},
    {"network": "alpha", "cell": "", "controller": "max-pressure", "label": "max-pressure",
     "seeds": 3, "failed": 0, "mean_delay_s": 30.0, "delay_vs_fixed_pct": -28.6},
    {"network": "beta", "cell": "", "controller": "max-pressure", "label": "max-pressure",
     "seeds": 3, "failed": 0, "mean_delay_s": 23.0, "delay_vs_fixed_pct": 4.5},
    {"network": "beta", "cell": "", "controller": "dqn", "label": "dqn [lr=0.01]",
     "seeds": 0, "failed": 3, "mean_delay_s": math.nan, "delay_vs_fixed_pct": math.nan},
])


def test_gate_syntax() -> None:
    gate = gates.parse("max-pressure:delay_vs_fixed_pct<=-20")
    assert (gate.controller, gate.metric, gate.op, gate.threshold) == (
        "max-pressure", "delay_vs_fixed_pct", "<=", -20.0)
    assert gates.parse(" mean_delay_s > 1e1 ").threshold == 10.0
    assert gates.parse("trained:runs/x:mean_delay_s<30").controller == "trained:runs/x"
    for bad, words in (("delay_vs_fixed_pct=-20", "METRIC OP NUMBER"),
                       ("delay<=3", "unknown metric"), ("mean_delay_s<=fast", "METRIC OP")):
        with pytest.raises(gates.GateError, match=words):
            gates.parse(bad)
    with pytest.raises(gates.GateError, match="no controller 'sotl'"):
        gates.check_controllers([gates.parse("sotl:mean_delay_s<9")], ["fixed", "max-pressure"])


def test_gates_name_each_controller_that_misses_them() -> None:
    verdicts = gates.check([gates.parse("delay_vs_fixed_pct<=-20")], SUMMARY)
    # fixed is the reference: its own delay_vs_fixed_pct is not gated
    assert [(v.network, v.controller, v.passed) for v in verdicts] == [
        ("alpha", "max-pressure", True), ("beta", "max-pressure", False),
        ("beta", "dqn [lr=0.01]", False)]
    assert verdicts[1].line() == ("gate FAILED: max-pressure on beta: delay_vs_fixed_pct = "
                                  "+4.50 (needs <= -20)")
    assert "no value" in verdicts[2].line()
    only = gates.check([gates.parse("dqn:failed<=0"), gates.parse("fixed:mean_delay_s<50")],
                       SUMMARY)
    assert [(v.controller, v.passed) for v in only] == [("dqn [lr=0.01]", False),
                                                        ("fixed", True)]
    text = gates.markdown(verdicts)
    assert "1 of 3 passed." in text and text.count("**FAIL**") == 2


def test_gates_append_to_the_github_step_summary(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    assert gates.append_step_summary("# nothing") is None
    target = tmp_path / "summary.md"
    target.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(target))
    gates.append_step_summary("## Gates\n")
    assert target.read_text() == "earlier step\n## Gates\n\n"
