"""The results layout every command writes, and reading it back (old layouts included).

::

    DIR/manifest.json   what the folder holds: layout version, kind (compare, evaluate,
                        run, sweep, robustness, study), name, time, the resolved spec,
                        the demand, and every run of the plan in order
    DIR/spec.toml       the resolved spec (``greenphase run``/``sweep`` read it back)
    DIR/store/          one file per run (:mod:`experiments.store`)
    DIR/metrics.parquet, summary.json, report.md, plots/*.png, log.txt

Folders written before the manifest still read: a sweep's (``store/`` and
``plan.json``) and a comparison's (``metrics.parquet``, ``summary.json``,
``trips.parquet``); the others are named in one line (:class:`ReportError`), and so
is every damaged file (:class:`experiments.results.DamagedFileError`).

:func:`claim` is the one rule for writing into a folder, whichever command writes: a
folder that exists and is not empty is written only if it holds results of the same
kind and the command resumes them or is given ``--overwrite``. ``--overwrite``
replaces only what the command itself writes; a folder of another command's results,
or of files that are not greenphase results, is refused even then.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from experiments import results, store
from simulator.metrics import delay_over_time

if TYPE_CHECKING:
    from experiments.spec import Sweep
    from experiments.units import RunUnit

MANIFEST = "manifest.json"
"""The manifest's file name in a results folder."""
LAYOUT_VERSION = 1
"""The version of this layout (0: a sweep folder with ``plan.json`` and no manifest)."""
KINDS = ("compare", "evaluate", "run", "sweep", "robustness", "study")
"""The commands that write this layout."""


FAMILIES: dict[str, str] = {"evaluate": "compare", "run": "sweep"}
"""Kinds that write the same layout, so each takes the other's folder."""
RESUMABLE = ("run", "sweep", "train", "benchmark")
"""Kinds whose commands continue the results in their folder (``--resume``)."""
SCRATCH = "scratch.txt"
"""The note that marks a scratch folder (``bench-sweep``), whose runs are timed, not kept."""
RESULT_FILES = ("metrics.parquet", "summary.json", "checkpoints/last.pt", "params.toml",
                "trials.parquet", "study.csv", "robustness.csv", "benchmark.json")
"""Files that hold results (besides the store's runs): a folder with one is not empty."""


class ReportError(ValueError):
    """A folder that holds no results to read; the message is one line."""


def held_kind(folder: Path) -> str | None:
    """The kind of greenphase results in ``folder`` (None when it holds none).

    A manifest names it; ``train``, ``tune``, ``bench-sweep`` and the old layouts are
    known by their files.

    Raises:
        experiments.results.DamagedFileError: Its manifest (or ``plan.json``) is damaged.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is not None:
        return str(manifest["kind"])
    marks = (("benchmark", ("benchmark.json",)),
             ("train", ("checkpoints", "curves.csv")), ("tune", ("params.toml",)),
             ("bench-sweep", (SCRATCH,)), ("robustness", ("robustness.csv",)),
             ("study", ("study.csv",)), ("sweep", (store.STORE,)),
             ("compare", ("metrics.parquet", "summary.json")))
    for kind, names in marks:
        if any((folder / name).exists() for name in names):
            return kind
    if any(folder.glob(f"workers-*/{store.STORE}")):  # a bench-sweep before its note
        return "bench-sweep"
    return None


def held_words(kind: str) -> str:
    """What a folder of ``kind`` holds, in words."""
    if kind == "train":
        return "a training run"
    if kind == "bench-sweep":
        return "the scratch runs of `greenphase bench-sweep`"
    return f"the {'results' if kind == 'tune' else 'runs'} of `greenphase {kind}`"


def _file_count(folder: Path, limit: int = 10_000) -> tuple[int, str]:
    """How many files are under ``folder`` (stopping at ``limit``) and the first one's name."""
    count, first = 0, ""
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        if not first and (files or dirs):
            first = str((Path(root) / sorted(files or dirs)[0]).relative_to(folder))
        count += len(files)
        if count >= limit:
            break
    return count, first


def claim(folder: Path, kind: str, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Check that ``kind``'s command may write its results into ``folder``.

    A new or empty folder, or one of the same kind that holds no results yet, is taken;
    one of the same kind with results only with ``resume`` (``run``, ``sweep``,
    ``train``) or ``overwrite``, which then replaces what the command writes there.
    A folder of another kind, or holding files that are not greenphase results, is
    refused whatever the flags: nothing greenphase did not write is ever replaced.

    Raises:
        experiments.results.OutputError: The folder may not be written; one line naming
            it, what it holds and the flag.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise results.OutputError(f"{folder} is a file, not a folder: give {kind} a folder "
                                  "for its results (--out)")
    if not folder.is_dir() or not any(folder.iterdir()):
        return folder
    try:
        held = held_kind(folder)
    except results.DamagedFileError as err:
        raise results.DamagedFileError(
            err.damaged, f"{kind} writes into no folder it cannot identify: move the file "
                         "aside (a store's runs stay) or give another --out") from None
    if held is None:
        count, first = _file_count(folder)
        raise results.OutputError(
            f"{folder} is not empty ({count} file{' that is' if count == 1 else 's that are'} "
            f"not greenphase results, e.g. {first}): {kind} writes only into a new or empty "
            "folder, and --overwrite replaces only greenphase results; give another --out")
    words = held_words(held)
    if FAMILIES.get(held, held) != FAMILIES.get(kind, kind):
        raise results.OutputError(
            f"{folder} holds {words}: give {kind} a folder of its own (--out); --overwrite "
            "replaces only results of the same command")
    has_results = store.has_runs(folder) or any((folder / f).exists() for f in RESULT_FILES)
    if overwrite or not has_results or (resume and kind in RESUMABLE):
        return folder
    flags = ("--resume to continue it or --overwrite to start again" if kind in RESUMABLE
             else "--overwrite to replace them, or give another --out")
    raise results.OutputError(f"{folder} already holds {words}: use {flags}")


def run_entries(units: Iterable[RunUnit]) -> list[dict[str, Any]]:
    """The plan's runs in order, as the manifest lists them."""
    return [{"hash": u.hash, "network": u.network, "cell": u.cell, "controller": u.controller,
             "setting": u.setting, "seed": u.seed} for u in units]


def write_manifest(folder: Path, kind: str, plan: Sweep, units: Iterable[RunUnit],
                   extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``manifest.json``: what the folder holds and every run of its plan in order."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of results {kind!r}; known: {', '.join(KINDS)}")
    doc = {
        "layout": LAYOUT_VERSION, "kind": kind, "name": plan.name,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "spec": plan.to_dict(), "demand": results.plain(plan.base.demand),
        "protocol": plan.base.signals.protocol,
        **(extra or {}), "runs": run_entries(units),
    }
    return results.write_json(folder / MANIFEST, doc)


def fresh(folder: Path) -> Path:
    """``folder``, or ``folder-2``, ``-3``... if it is taken.

    A default folder is named by the second it was made in; two commands in the same
    second each get their own.
    """
    folder, number = Path(folder), 1
    candidate = folder
    while candidate.exists():
        number += 1
        candidate = folder.with_name(f"{folder.name}-{number}")
    return candidate


def claim_files(paths: Sequence[Path], *, overwrite: bool = False) -> None:
    """Check that single files (a picture, a screenshot) may be written: new, or ``overwrite``.

    Raises:
        experiments.results.OutputError: One exists and ``overwrite`` is not given, or is a
            folder.
    """
    for path in paths:
        if Path(path).is_dir():
            raise results.OutputError(f"{path} is a folder: give a file name")
        if Path(path).exists() and not overwrite:
            raise results.OutputError(f"{path} exists: use --overwrite to replace it")


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest; a sweep's ``plan.json`` of the old layout as one; else None.

    Raises:
        experiments.results.DamagedFileError: The file cannot be read, or is no manifest.
    """
    folder = Path(folder)
    for name in (MANIFEST, "plan.json"):
        path = folder / name
        if path.is_file():
            doc = results.read_json(path)
            runs = doc.get("runs") if isinstance(doc, dict) else None
            if not isinstance(runs, list) or not all(
                    isinstance(run, dict) and "hash" in run for run in runs):
                raise results.DamagedFileError({path: "no list of runs"})
            if name == "plan.json":
                doc = {"layout": 0, "kind": "sweep", **doc}
            if not isinstance(doc.get("kind"), str):
                raise results.DamagedFileError({path: "no kind"})
            return dict(doc)
    return None


def replaces(folder: Path, kinds: Sequence[str]) -> bool:
    """Whether a command of ``kinds`` replaces the runs in ``folder`` (none there: False).

    A comparison, robustness study or optimiser study writes a folder whole, so it
    replaces its own kind's runs; its command has checked with :func:`claim` that it
    may (``--overwrite``) before it runs.

    Raises:
        experiments.results.OutputError: The folder holds runs of another command.
    """
    if not store.has_runs(folder):
        return False
    manifest = read_manifest(folder)
    kind = manifest.get("kind") if manifest is not None else "sweep"
    if kind not in kinds:
        raise results.OutputError(f"{folder} holds the runs of `greenphase {kind}`: give "
                                  f"{kinds[0]} a folder of its own (--out)")
    return True


def old_layout(folder: Path) -> str | None:
    """One line naming an old layout that holds no runs to report, or None."""
    spec = folder / "spec.toml"
    command = ""
    if spec.is_file():
        import tomllib

        try:
            command = str(tomllib.loads(spec.read_text()).get("command", ""))
        except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError):
            command = ""
    if command == "robustness" or (folder / "robustness.csv").is_file():
        return (f"{folder} is a robustness folder of the old layout (robustness.csv, no "
                "store/): its summary.json and plots/robustness.png are its report")
    if command == "study" or (folder / "study.csv").is_file():
        return (f"{folder} is a study folder of the old layout (study.csv, summary.csv, no "
                "store/): its plots/learning_curves.png is its report")
    if (folder / "checkpoints").is_dir():
        return (f"{folder} is a training run (checkpoints/), not a results folder: compare "
                f"it with `greenphase evaluate {folder}`")
    return None


def load_runs(folder: Path) -> pd.DataFrame:
    """The runs of a results folder as store rows (both statuses), in the plan's order.

    A folder with a store gives the store's rows of the runs in its manifest (or, in the
    old layout, ``plan.json``); a ``compare`` folder of the old layout gives its
    ``metrics.parquet`` as finished rows (with the delay over time from ``trips.parquet``).

    Raises:
        ReportError: The folder holds neither; the message names an old layout it holds.
    """
    folder = Path(folder)
    if (folder / store.STORE).is_dir():
        manifest = read_manifest(folder)
        damaged = store.damaged(folder)  # all named at once: rows, trips and curves
        if damaged:
            kind = (manifest or {}).get("kind", "sweep")
            raise results.DamagedFileError(damaged, store.RESUME_HINT if kind in (
                "run", "sweep") else f"`greenphase {kind} --overwrite` runs them all again")
        rows = store.read(folder)
        if manifest is not None:
            order = {run["hash"]: i for i, run in enumerate(manifest["runs"])}
            rows = rows[rows["hash"].isin(order)].copy()
            rows["order"] = rows["hash"].map(order)
        else:
            rows = rows.copy()
            rows["order"] = range(len(rows))
        return rows.sort_values(["order", "attempt"], kind="stable").reset_index(drop=True)
    old = old_layout(folder)
    if old is not None:
        raise ReportError(old)
    if (folder / "metrics.parquet").is_file():
        return _compare_runs(folder)
    raise ReportError(f"{folder} holds no results: no store/ (a sweep) and no metrics.parquet "
                      "(a comparison)")


def _compare_runs(folder: Path) -> pd.DataFrame:
    """A comparison folder of the old layout as store rows."""
    metrics = results.read_parquet(folder / "metrics.parquet",
                                   ("controller", "seed", "mean_delay_s"))
    doc = results.read_json(folder / "summary.json") if (
        folder / "summary.json").is_file() else {}
    if not isinstance(doc, dict):
        raise results.DamagedFileError({folder / "summary.json": "not a summary"})
    begin, end = doc.get("begin_s"), doc.get("end_s")
    trips = results.read_parquet(folder / "trips.parquet", ("controller", "seed")) if (
        folder / "trips.parquet").is_file() else None
    rows = []
    for run in metrics.to_dict("records"):
        series = ""
        if trips is not None and begin is not None and end is not None:
            mine = trips[(trips["controller"] == run["controller"])
                         & (trips["seed"] == run["seed"])]
            series = json.dumps(delay_over_time(mine, begin, end))
        rows.append({**run, "hash": f"{run['controller']}-{run['seed']}",
                     "experiment": folder.name, "network": doc.get("network", folder.name),
                     "status": "ok", "attempt": 1, "delay_over_time": series})
    out = store.rows_frame(rows)
    out["order"] = range(len(out))
    return out
