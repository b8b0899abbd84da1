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
``trips.parquet``); the others are named in one line (:class:`ReportError`).
"""

from __future__ import annotations

import json
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


class ReportError(ValueError):
    """A folder that holds no results to read; the message is one line."""


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


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest; a sweep's ``plan.json`` of the old layout as one; else None."""
    folder = Path(folder)
    for name in (MANIFEST, "plan.json"):
        path = folder / name
        if path.is_file():
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                raise ReportError(f"{path}: unreadable ({err})") from None
            if name == "plan.json":
                doc = {"layout": 0, "kind": "sweep", **doc}
            return dict(doc)
    return None


def replaces(folder: Path, kinds: Sequence[str]) -> bool:
    """Whether a command of ``kinds`` replaces the runs in ``folder`` (none there: False).

    A comparison, robustness study or optimiser study writes a folder whole, so it
    replaces its own kind's runs, as these commands always have.

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
        rows = store.read(folder)
        manifest = read_manifest(folder)
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
    metrics = pd.read_parquet(folder / "metrics.parquet")
    doc = json.loads((folder / "summary.json").read_text()) if (
        folder / "summary.json").is_file() else {}
    begin, end = doc.get("begin_s"), doc.get("end_s")
    trips = pd.read_parquet(folder / "trips.parquet") if (folder / "trips.parquet").is_file() \
        else None
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
