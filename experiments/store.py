"""The results store of a sweep: one small Parquet file per run, each written atomically.

::

    DIR/store/
        runs/<hash>.parquet              a finished run: one row, status "ok"
        failed/<hash>.<attempt>.parquet  a failed attempt: one row, status "failed", its error
        trips/<hash>.parquet             a finished run's per-trip rows (when the spec keeps them)
        curves/<hash>.parquet            a learned controller's training curve, one row per episode
        damaged/runs/<hash>.parquet ...  files found damaged, set aside by ``sweep --resume``
        .lock                            held by the sweep writing here

Every file is written to a temporary name and renamed into place, and a run's row is
written after its trips and curves: a run is in the store entirely or not at all, so a
sweep killed at any moment (even by SIGKILL) resumes without losing or repeating one.
The sweep's parent process is the only writer. :func:`read` concatenates the rows.

A file damaged after the fact (a truncated copy, a full disk, a stray edit) is never
read as a run: :func:`read` names every damaged file in one line, and a resumed sweep
moves them to ``damaged/`` (:meth:`Store.set_aside_damaged`) and runs their runs again.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from experiments import results
from simulator.metrics import KPI_NAMES

STORE = "store"
"""The store's folder inside a results directory."""

COLUMNS: dict[str, str] = {
    "hash": "str",
    "experiment": "str",
    "network": "str",
    "cell": "str",
    "controller": "str",
    "setting": "str",
    "seed": "int64",
    "status": "str",
    "attempt": "int64",
    "error": "str",
    **dict.fromkeys(KPI_NAMES, "float64"),
    "wall_s": "float64",
    "started": "str",
    "finished": "str",
    "worker_pid": "int64",
    "host": "str",
    "worker_rss_mb": "float64",
    "delay_over_time": "str",
    "trips": "str",
    "curves": "str",
    "spec": "str",
}
"""A row of the store and its type. ``cell`` names the sweep axis values that shape the traffic,
``setting`` a learned controller's training axis values; ``delay_over_time`` is JSON (mean
delay of trips binned by scheduled departure); ``trips`` and ``curves`` are paths relative to
the results directory, or empty; ``spec`` is the resolved run as JSON."""

STATUSES = ("ok", "failed")
REQUIRED = ("hash", "status", "controller", "seed", "mean_delay_s")
"""The columns without which a file of the store is damaged (older stores may lack others,
which read as missing values)."""
DAMAGED = "damaged"
"""The store's folder of files set aside as damaged."""
RESUME_HINT = "`greenphase sweep --resume` moves them to store/damaged/ and runs them again"


class StoreBusyError(results.OutputError):
    """Another sweep is writing to the same store."""


def rows_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows as a store frame: every column, each of its type (missing: '', 0 or NaN)."""

    def missing(value: Any) -> bool:
        return value is None or (isinstance(value, float) and math.isnan(value))

    data: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    for row in rows:
        for column, dtype in COLUMNS.items():
            value: Any = row.get(column)
            if dtype == "str":
                data[column].append("" if missing(value) else str(value))
            elif dtype == "int64":
                data[column].append(0 if missing(value) else int(value))
            else:
                data[column].append(math.nan if missing(value) else float(value))
    return pd.DataFrame({c: pd.Series(v, dtype=COLUMNS[c]) for c, v in data.items()})


def empty() -> pd.DataFrame:
    """A store frame with no rows."""
    return rows_frame([])


class Store:
    """The store of one results directory, opened for writing by one sweep at a time.

    Args:
        folder: The results directory (the store is ``folder/store``).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.root = self.folder / STORE
        self._lock: int | None = None

    # ---------------------------------------------------------------- paths
    def run_path(self, run_hash: str) -> Path:
        """The file of a finished run."""
        return self.root / "runs" / f"{run_hash}.parquet"

    def trips_path(self, run_hash: str) -> Path:
        """The per-trip rows of a finished run."""
        return self.root / "trips" / f"{run_hash}.parquet"

    def curves_path(self, run_hash: str) -> Path:
        """The training curve of a learned controller's run."""
        return self.root / "curves" / f"{run_hash}.parquet"

    # ---------------------------------------------------------------- writing
    def open(self) -> Store:
        """Create the folders, take the lock and sweep away temporary files of a killed writer.

        Raises:
            StoreBusyError: Another process holds the lock.
            experiments.results.OutputError: The folder cannot be written.
        """
        results.ensure_writable(self.folder)
        for sub in ("runs", "failed", "trips", "curves"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StoreBusyError(
                f"{self.folder} is in use by another sweep (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock = fd
        for sub in ("runs", "failed", "trips", "curves"):
            for tmp in (self.root / sub).glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
        return self

    def close(self) -> None:
        """Release the lock."""
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the lock
            self._lock = None

    def __enter__(self) -> Store:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def clear(self) -> None:
        """Remove every stored run and attempt (``--overwrite``); the lock stays held."""
        shutil.rmtree(self.root / DAMAGED, ignore_errors=True)
        for sub in ("runs", "failed", "trips", "curves"):
            shutil.rmtree(self.root / sub, ignore_errors=True)
            (self.root / sub).mkdir(parents=True)

    def set_aside_damaged(self) -> list[Path]:
        """Move damaged files to ``damaged/`` (a run's trips and curves with it); return them.

        A run whose row, trips or curves file is damaged is no longer finished, so a
        resumed sweep runs it again; nothing is deleted.
        """
        moved = []
        for path in damaged(self.folder):
            run_hash = path.name.split(".", 1)[0]
            group = [path]
            if path.parent.name in ("runs", "trips", "curves"):
                group = [self.run_path(run_hash), self.trips_path(run_hash),
                         self.curves_path(run_hash)]
            for file in group:
                if file.is_file():
                    target = self.root / DAMAGED / file.parent.name / file.name
                    copies = 0
                    while target.exists():  # an earlier damaged copy is kept too
                        copies += 1
                        target = target.with_name(f"{file.name}.{copies}")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(file, target)
                    moved.append(target)
        return moved

    def write_run(
        self, row: Mapping[str, Any], *, trips: pd.DataFrame | None = None,
        curves: pd.DataFrame | None = None,
    ) -> Path:
        """Record a finished run: its trips and curves first, then its row (the commit)."""
        run_hash = str(row["hash"])
        row = dict(row)
        if trips is not None:
            results.write_parquet(self.trips_path(run_hash), trips)
            row["trips"] = str(self.trips_path(run_hash).relative_to(self.folder))
        if curves is not None:
            results.write_parquet(self.curves_path(run_hash), curves)
            row["curves"] = str(self.curves_path(run_hash).relative_to(self.folder))
        return results.write_parquet(self.run_path(run_hash), rows_frame([row]))

    def write_failure(self, row: Mapping[str, Any]) -> Path:
        """Record a failed attempt."""
        path = self.root / "failed" / f"{row['hash']}.{int(row['attempt'])}.parquet"
        return results.write_parquet(path, rows_frame([row]))

    # ---------------------------------------------------------------- reading
    def finished(self) -> set[str]:
        """Hashes of the finished runs."""
        return {p.name.removesuffix(".parquet") for p in (self.root / "runs").glob("*.parquet")}

    def failed_attempts(self) -> dict[str, int]:
        """How many failed attempts each run has on record."""
        counts: dict[str, int] = {}
        for path in (self.root / "failed").glob("*.parquet"):
            run_hash = path.name.split(".", 1)[0]
            counts[run_hash] = counts.get(run_hash, 0) + 1
        return counts

    def read(self) -> pd.DataFrame:
        """Every row: finished runs and failed attempts."""
        return read(self.folder)


def _files(folder: Path) -> Iterator[Path]:
    root = Path(folder) / STORE
    for sub in ("runs", "failed"):
        yield from sorted((root / sub).glob("*.parquet"))


def _row_table(path: Path) -> pa.Table | str:
    """A row file's table, or why it is damaged (it must hold its own run's one row)."""
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException, ValueError) as err:
        return results.damage(path, err)
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        return f"no column {', '.join(missing)}"
    if table.num_rows != 1:
        return f"{table.num_rows} rows, not 1"
    run_hash = str(table.column("hash")[0])
    if path.name.split(".", 1)[0] != run_hash:
        return f"holds run {run_hash}"
    return table


def _footer_damage(path: Path) -> str | None:
    """Why a trips or curves file is damaged (its footer is read, not its rows), or None."""
    try:
        pq.read_metadata(path)
    except FileNotFoundError:
        return "missing"
    except (OSError, pa.ArrowException, ValueError) as err:
        return results.damage(path, err)
    return None


def damaged(folder: Path) -> dict[Path, str]:
    """Every damaged file of the store, and why: row files, and the trips and curves of runs."""
    found: dict[Path, str] = {}
    for path in _files(folder):
        with contextlib.suppress(FileNotFoundError):
            table = _row_table(path)
            if isinstance(table, str):
                found[path] = table
            elif path.parent.name == "runs":
                for column in ("trips", "curves"):
                    relative = (str(table.column(column)[0])
                                if column in table.column_names else "")
                    why = _footer_damage(Path(folder) / relative) if relative else None
                    if why is not None:
                        found[Path(folder) / relative] = why
    return found


def read(folder: Path, *, status: str | None = None) -> pd.DataFrame:
    """The store's rows (``status``: only ``ok`` or only ``failed`` rows), in file order.

    Raises:
        experiments.results.DamagedFileError: Row files that cannot be read, all named.
    """
    tables = []
    bad: dict[Path, str] = {}
    for path in _files(folder):
        if status == "ok" and path.parent.name != "runs":
            continue
        if status == "failed" and path.parent.name != "failed":
            continue
        with contextlib.suppress(FileNotFoundError):  # removed by --overwrite meanwhile
            table = _row_table(path)
            if isinstance(table, str):
                bad[path] = table
            else:
                tables.append(table)
    if bad:
        raise results.DamagedFileError(bad, RESUME_HINT)
    if not tables:
        return empty()
    frame = pa.concat_tables(tables, promote_options="default").to_pandas()
    return rows_frame(frame.to_dict("records"))


def has_runs(folder: Path) -> bool:
    """Whether the folder's store holds any row."""
    return next(_files(folder), None) is not None


def _kept_file(folder: Path, relative: str) -> Path | None:
    """The file a row names, inside ``folder`` (None if the row names none or it is gone)."""
    if not relative:
        return None
    path = Path(folder) / relative
    if not path.resolve().is_relative_to(Path(folder).resolve()):
        raise results.DamagedFileError({path: "outside the results folder"})
    return path if path.is_file() else None


def read_trips(folder: Path, relative: str) -> pd.DataFrame | None:
    """A run's per-trip rows by the row's ``trips`` path (None if not kept).

    Raises:
        experiments.results.DamagedFileError: The file cannot be read.
    """
    path = _kept_file(folder, relative)
    return None if path is None else results.read_parquet(path)


def read_curves(folder: Path, relative: str) -> pd.DataFrame | None:
    """A run's training curve by the row's ``curves`` path (None if it has none).

    Raises:
        experiments.results.DamagedFileError: The file cannot be read.
    """
    path = _kept_file(folder, relative)
    return None if path is None else results.read_parquet(path)
