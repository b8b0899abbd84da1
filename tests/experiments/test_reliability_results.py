"""Reliability of results folders (issue 12): nothing overwritten, damaged files named and
set aside, a full disk that keeps what finished, and an unusable cache named in one line."""

from __future__ import annotations

import errno
import json
import os
import shutil
import types
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from experiments import layout, results, store
from experiments.cli import app
from experiments.executor import InProcessExecutor
from experiments.options import BadInput
from experiments.spec import load
from experiments.sweep import sweep
from experiments.workflows import spec_folder
from networks import NetworkError, Scenario
from networks.generators import grid

runner = CliRunner()

SPEC = """
name = "two"
network = "grid-1x1"
end = 120
controllers = ["fixed"]
seeds = 2
"""
COMPARE = ["compare", "--network", "grid-1x1", "--end", "120", "--seeds", "1"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(result, status: int, *words: str) -> str:
    assert result.exit_code == status, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def swept(grid1x1: Scenario, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A two-run sweep folder (fixed timing over two seeds) and its spec."""
    folder = tmp_path_factory.mktemp("swept")
    spec = folder / "two.toml"
    spec.write_text(SPEC)
    result = sweep(load(spec), folder / "out", executor=InProcessExecutor())
    assert result.finished == 2 and not result.failures
    return spec, folder / "out"


@pytest.fixture(scope="module")
def compared(grid1x1: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A comparison folder: fixed timing, one seed."""
    out = tmp_path_factory.mktemp("compared") / "cmp"
    result = runner.invoke(app, [*COMPARE, "-c", "fixed", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture()
def sweep_copy(swept: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    spec, out = swept
    shutil.copytree(out, tmp_path / "out")
    return spec, tmp_path / "out"


@pytest.fixture()
def training_run(tmp_path: Path) -> Path:
    run = tmp_path / "trained"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"a checkpoint")
    (run / "curves.csv").write_text("kind,episode\n")
    return run


# ------------------------------------------------------------------ finding 3: overwrites
def test_compare_into_a_comparison_needs_overwrite_which_keeps_other_files(
        compared: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    shutil.copytree(compared, out)
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    line = one_error_line(runner.invoke(app, [*COMPARE, "-c", "fixed", "--out", str(out)]), 2,
                          str(out), "the runs of `greenphase compare`", "--overwrite")
    assert "already holds" in line
    assert snapshot(out) == before
    result = runner.invoke(app, [*COMPARE, "-c", "fixed", "--out", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert (out / "notes.txt").read_text() == "mine"  # --overwrite replaces only its own files
    assert len(store.read(out)) == 1


@pytest.mark.parametrize("flags", [[], ["--overwrite"]])
def test_compare_never_writes_over_a_sweep_or_a_training_run(
        swept: tuple[Path, Path], training_run: Path, flags: list[str]) -> None:
    for folder, words in ((swept[1], "the runs of `greenphase sweep`"),
                          (training_run, "a training run")):
        before = snapshot(folder)
        result = runner.invoke(app, [*COMPARE, "-c", "fixed", "--out", str(folder), *flags])
        one_error_line(result, 2, str(folder), words, "--overwrite")
        assert snapshot(folder) == before


def test_train_into_a_comparison_is_refused(compared: Path) -> None:
    before = snapshot(compared)
    result = runner.invoke(app, ["train", "--network", "grid-1x1", "--end", "60", "--episodes",
                                 "1", "--hidden", "8", "--out", str(compared), "--overwrite"])
    one_error_line(result, 2, str(compared), "the runs of `greenphase compare`")
    assert snapshot(compared) == before


@pytest.mark.parametrize("flags", [[], ["--overwrite"], ["--resume"]])
def test_sweep_into_an_unrelated_folder_is_refused_even_with_flags(
        swept: tuple[Path, Path], tmp_path: Path, flags: list[str]) -> None:
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "thesis.tex").write_text("chapter 1")
    (mine / "sub" / "data.csv").write_text("1,2\n")
    before = snapshot(mine)
    result = runner.invoke(app, ["sweep", str(swept[0]), "--out", str(mine), *flags])
    one_error_line(result, 2, str(mine), "not empty", "2 files", "not greenphase results")
    assert snapshot(mine) == before


def test_sweep_into_its_own_folder_needs_resume_or_overwrite(
        sweep_copy: tuple[Path, Path]) -> None:
    spec, out = sweep_copy
    before = snapshot(out)
    one_error_line(runner.invoke(app, ["sweep", str(spec), "--out", str(out)]), 2,
                   str(out), "--resume", "--overwrite")
    assert snapshot(out) == before


def test_study_tune_and_bench_sweep_refuse_another_commands_folder(
        compared: Path, training_run: Path) -> None:
    before = snapshot(compared)
    one_error_line(runner.invoke(app, ["study", "--network", "grid-1x1", "--out",
                                       str(compared), "--overwrite"]), 2, str(compared))
    one_error_line(runner.invoke(app, ["tune", "max-pressure", "--network", "grid-1x1",
                                       "--out", str(compared), "--overwrite"]), 2, str(compared))
    one_error_line(runner.invoke(app, ["bench-sweep", "--network", "grid-1x1", "--out",
                                       str(compared)]), 2, str(compared))
    assert snapshot(compared) == before
    before = snapshot(training_run)
    one_error_line(runner.invoke(app, ["bench-sweep", "--out", str(training_run)]), 2,
                   "a training run")
    assert snapshot(training_run) == before


def test_single_files_are_not_overwritten_without_the_flag(tmp_path: Path) -> None:
    png = tmp_path / "picture.png"
    png.write_bytes(b"my picture")
    one_error_line(runner.invoke(app, ["networks", "show", "grid-1x1", "--png", str(png)]), 2,
                   str(png), "exists", "--overwrite")
    one_error_line(runner.invoke(app, ["replay", "--network", "grid-1x1", "-c", "fixed",
                                       "--screenshot", str(png)]), 2, str(png), "--overwrite")
    assert png.read_bytes() == b"my picture"


def test_a_file_as_the_results_folder_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "results"
    file.write_text("not a folder")
    one_error_line(runner.invoke(app, [*COMPARE, "-c", "fixed", "--out", str(file)]), 2,
                   str(file), "is a file")
    assert file.read_text() == "not a folder"


def test_a_default_folder_taken_in_the_same_second_gets_a_new_name(tmp_path: Path) -> None:
    taken = tmp_path / "compare-grid-1x1-20260101-120000"
    (taken / "store").mkdir(parents=True)
    (taken.with_name(taken.name + "-2")).mkdir()
    assert layout.fresh(taken) == taken.with_name(taken.name + "-3")
    assert layout.fresh(tmp_path / "new") == tmp_path / "new"


@pytest.mark.parametrize("name", ["../../x", "/tmp/elsewhere", "a/../../b"])
def test_a_spec_name_never_puts_results_outside_runs(name: str) -> None:
    with pytest.raises(BadInput, match="outside runs/"):
        spec_folder(types.SimpleNamespace(name=name), None)  # type: ignore[arg-type]


def test_a_stored_path_never_reads_outside_the_folder(tmp_path: Path) -> None:
    with pytest.raises(results.DamagedFileError, match="outside the results folder"):
        store.read_trips(tmp_path, "../../etc/hostname")


# ------------------------------------------------------------------ finding 6: damaged files
def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def zero(path: Path) -> None:
    path.write_bytes(b"")


def random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(512))


def wrong_columns(path: Path) -> None:
    pq.write_table(pa.table({"colour": ["green"], "n": [1]}), path)


DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated": (truncate, "truncated"),
    "zero bytes": (zero, "empty, 0 bytes"),
    "random bytes": (random_bytes, "not a Parquet file"),
    "wrong columns": (wrong_columns, "no column hash"),
}


def run_files(folder: Path) -> list[Path]:
    return sorted((folder / "store" / "runs").glob("*.parquet"))


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_report_names_a_damaged_run_file_and_writes_nothing(
        sweep_copy: tuple[Path, Path], damage: str) -> None:
    _, out = sweep_copy
    (out / "report.md").unlink()
    bad = run_files(out)[0]
    DAMAGES[damage][0](bad)
    before = snapshot(out)
    one_error_line(runner.invoke(app, ["report", str(out)]), 2, str(bad), DAMAGES[damage][1],
                   "--resume")
    assert snapshot(out) == before and not (out / "report.md").exists()


def test_report_names_every_damaged_file_at_once(sweep_copy: tuple[Path, Path],
                                                 compared: Path, tmp_path: Path) -> None:
    _, out = sweep_copy
    trips = sorted((out / "store" / "trips").glob("*.parquet"))[0]
    row = run_files(out)[1]
    truncate(trips)
    zero(row)
    line = one_error_line(runner.invoke(app, ["report", str(out)]), 2, "2 damaged files",
                          f"{trips} (truncated", f"{row} (empty, 0 bytes)", "--resume")
    assert line.count("damaged") == 2  # "2 damaged files" and the store/damaged/ hint
    cmp = tmp_path / "cmp"
    shutil.copytree(compared, cmp)
    random_bytes(run_files(cmp)[0])
    one_error_line(runner.invoke(app, ["report", str(cmp)]), 2, "not a Parquet file",
                   "`greenphase compare --overwrite`")


@pytest.mark.parametrize("damage", ["truncated", "wrong columns"])  # report sees all four
def test_resume_sets_damaged_runs_aside_and_reruns_exactly_those(
        sweep_copy: tuple[Path, Path], damage: str) -> None:
    spec, out = sweep_copy
    reference = store.read(out).set_index("hash")
    bad, good = run_files(out)
    DAMAGES[damage][0](bad)
    damaged_bytes, good_bytes = bad.read_bytes(), good.read_bytes()
    ran: list[str] = []
    result = sweep(load(spec), out, executor=InProcessExecutor(), resume=True,
                   on_result=lambda unit, row, retry: ran.append(unit.hash))
    assert ran == [bad.stem]
    assert result.finished == 2 and result.skipped == 1 and not result.failures
    aside = out / "store" / "damaged" / "runs" / bad.name
    assert aside in result.set_aside and aside.read_bytes() == damaged_bytes
    assert {p.name for p in result.set_aside} == {bad.name}  # with its trips, if kept
    assert good.read_bytes() == good_bytes
    again = store.read(out).set_index("hash")
    pd.testing.assert_series_equal(again.loc[bad.stem, "mean_delay_s":"not_inserted"],
                                   reference.loc[bad.stem, "mean_delay_s":"not_inserted"])
    assert str(aside) in (out / "log.txt").read_text()
    assert runner.invoke(app, ["report", str(out)]).exit_code == 0


def test_resume_reruns_a_run_whose_trips_are_damaged(sweep_copy: tuple[Path, Path]) -> None:
    spec, out = sweep_copy
    trips = sorted((out / "store" / "trips").glob("*.parquet"))
    assert trips, "the sweep keeps its trips"
    truncate(trips[0])
    ran: list[str] = []
    sweep(load(spec), out, executor=InProcessExecutor(), resume=True,
          on_result=lambda unit, row, retry: ran.append(unit.hash))
    assert ran == [trips[0].stem]
    assert (out / "store" / "damaged" / "trips" / trips[0].name).is_file()
    assert (out / "store" / "damaged" / "runs" / trips[0].name).is_file()
    assert pq.read_table(trips[0]).num_rows > 0


def test_the_cli_resume_says_what_it_set_aside(sweep_copy: tuple[Path, Path]) -> None:
    spec, out = sweep_copy
    random_bytes(run_files(out)[0])
    result = runner.invoke(app, ["sweep", str(spec), "--out", str(out), "--resume",
                                 "--workers", "1", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["skipped"], doc["finished"]) == (1, 2)
    assert {Path(p).parent.name for p in doc["damaged_set_aside"]} == {"runs", "trips"}
    assert "damaged" in result.stderr and "run again" in result.stderr


@pytest.fixture(scope="module")
def old_layout(compared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A comparison folder of the layout before the manifest: no store, no manifest."""
    old = tmp_path_factory.mktemp("old") / "cmp"
    shutil.copytree(compared, old)
    shutil.rmtree(old / "store")
    (old / "manifest.json").unlink()
    assert runner.invoke(app, ["report", str(old)]).exit_code == 0  # it reads, undamaged
    return old


@pytest.fixture()
def old_compare(old_layout: Path, tmp_path: Path) -> Path:
    shutil.copytree(old_layout, tmp_path / "old")
    return tmp_path / "old"


@pytest.mark.parametrize("name", ["metrics.parquet", "summary.json", "trips.parquet"])
@pytest.mark.parametrize("damage", ["truncated", "zero bytes", "random bytes"])
def test_report_names_a_damaged_file_of_an_old_comparison(old_compare: Path, name: str,
                                                         damage: str) -> None:
    DAMAGES[damage][0](old_compare / name)
    one_error_line(runner.invoke(app, ["report", str(old_compare)]), 2,
                   str(old_compare / name), "damaged")


def test_report_names_a_metrics_file_with_the_wrong_columns(old_compare: Path) -> None:
    wrong_columns(old_compare / "metrics.parquet")
    one_error_line(runner.invoke(app, ["report", str(old_compare)]), 2,
                   "metrics.parquet", "no column controller")


@pytest.mark.parametrize("content", [b"", b'{"runs": [', os.urandom(64), b"[1, 2]",
                                     b'{"kind": "sweep"}'])
@pytest.mark.parametrize("name", ["manifest.json", "plan.json"])
def test_report_names_a_damaged_manifest(sweep_copy: tuple[Path, Path], name: str,
                                         content: bytes) -> None:
    _, out = sweep_copy
    if name == "plan.json":
        (out / "manifest.json").unlink()
    (out / name).write_bytes(content)
    one_error_line(runner.invoke(app, ["report", str(out)]), 2, str(out / name), "damaged")


def test_resume_refuses_a_folder_whose_manifest_is_damaged(
        sweep_copy: tuple[Path, Path]) -> None:
    spec, out = sweep_copy
    (out / "manifest.json").write_bytes(b"\x00garbage")
    before = snapshot(out)
    one_error_line(runner.invoke(app, ["sweep", str(spec), "--out", str(out), "--resume"]), 2,
                   "manifest.json", "damaged")
    assert snapshot(out) == before


# ------------------------------------------------------------------ finding 6: a full disk
def full_disk_after(monkeypatch: pytest.MonkeyPatch, runs: int, where: str = "runs") -> None:
    """Parquet writes into a folder named ``where`` fail with ENOSPC after ``runs`` of them."""
    real = results.write_parquet
    count = 0

    def write_parquet(path: Path, frame: pd.DataFrame) -> Path:
        nonlocal count
        if Path(path).parent.name == where:
            count += 1
            if count > runs:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, frame)

    monkeypatch.setattr(results, "write_parquet", write_parquet)


def test_a_full_disk_during_compare_keeps_the_finished_runs_and_prints_the_table(
        grid1x1: Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full_disk_after(monkeypatch, 2)
    out = tmp_path / "cmp"
    result = runner.invoke(app, [*COMPARE, "-c", "fixed,max-pressure", "--seeds", "2",
                                 "--out", str(out)])
    line = one_error_line(result, 1, "No space left on device",
                          f"kept 2 finished run(s) of 4 in {out / 'store'}")
    assert str(out / "store" / "runs") in line
    assert "fixed" in result.stdout and "max-pressure" in result.stdout  # the table
    kept = store.read(out)
    assert len(kept) == 2 and set(kept["status"]) == {"ok"}
    assert not list((out / "store" / "runs").glob(".*.tmp"))


def test_a_full_disk_after_the_runs_keeps_them_all(
        grid1x1: Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full_disk_after(monkeypatch, 0, where="cmp")  # metrics.parquet and trips.parquet
    out = tmp_path / "cmp"
    result = runner.invoke(app, [*COMPARE, "-c", "fixed", "--seeds", "2", "--out", str(out),
                                 "--json"])
    one_error_line(result, 1, str(out / "metrics.parquet"), "No space left on device",
                   f"kept all 2 runs in {out / 'store'}")
    doc = json.loads(result.stdout)
    assert [r["seed"] for r in doc["runs"]] == [0, 1]
    assert len(store.read(out)) == 2


def test_a_full_disk_during_a_sweep_keeps_the_finished_runs_for_resume(
        sweep_copy: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, _ = sweep_copy
    full_disk_after(monkeypatch, 1)
    out = tmp_path / "full"
    result = runner.invoke(app, ["sweep", str(spec), "--out", str(out), "--workers", "1"])
    one_error_line(result, 1, "No space left on device",
                   f"kept 1 finished run(s) in {out / 'store'}", "--resume")
    assert len(store.read(out)) == 1
    monkeypatch.undo()
    ran: list[str] = []
    sweep(load(spec), out, executor=InProcessExecutor(), resume=True,
          on_result=lambda unit, row, retry: ran.append(unit.hash))
    assert len(ran) == 1 and len(store.read(out)) == 2


# ------------------------------------------------------------------ finding 6: the cache
def unwritable(tmp_path: Path) -> Path:
    if os.geteuid() == 0:  # root writes any folder: take one that cannot be made
        return Path("/proc/greenphase-cache")
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    return folder / "cache"


@pytest.mark.parametrize("case", ["a file", "under a file", "unwritable"])
def test_an_unusable_cache_is_one_line_naming_the_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    file = tmp_path / "cache-file"
    file.write_text("not a folder")
    path = {"a file": file, "under a file": file / "sub", "unwritable": unwritable(tmp_path)}[case]
    monkeypatch.setenv("GREENPHASE_CACHE", str(path))
    result = runner.invoke(app, [*COMPARE, "-c", "fixed", "--out", str(tmp_path / "cmp")])
    one_error_line(result, 2, f"GREENPHASE_CACHE={path}", "set GREENPHASE_CACHE")
    assert file.read_text() == "not a folder"
    with pytest.raises(NetworkError, match="GREENPHASE_CACHE"):
        grid(1, 1)


def test_an_explicit_cache_under_a_file_is_named(tmp_path: Path) -> None:
    file = tmp_path / "cache-file"
    file.write_text("x")
    with pytest.raises(NetworkError, match="cache folder .*cache-file"):
        grid(1, 1, cache_dir=file)
