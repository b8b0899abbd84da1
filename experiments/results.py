"""Writing results atomically (write, then rename) and as plain values.

``atomic_write`` and ``write_text`` are :mod:`networks.files`' (the project's one atomic
write), here beside the JSON, TOML, Parquet and figure writers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from networks import scratch
from networks.files import atomic_write, write_text

__all__ = ["DamagedFileError", "OutputError", "atomic_write", "damage", "ensure_writable",
           "folder_or_temporary", "plain", "pyplot", "read_json", "read_parquet",
           "save_figure", "toml_text", "write_json", "write_parquet", "write_summary",
           "write_text", "write_toml", "WriteFailed"]


class OutputError(ValueError):
    """A results directory that cannot be written; the message is one line."""


class DamagedFileError(OutputError):
    """Results files that cannot be read back; the message names each, in one line."""

    def __init__(self, damaged: Mapping[Path, str], hint: str = "") -> None:
        self.damaged = dict(damaged)
        names = "; ".join(f"{path} ({why})" for path, why in self.damaged.items())
        count = len(self.damaged)
        super().__init__(f"{count} damaged file{'s' if count > 1 else ''}: {names}"
                         + (f"; {hint}" if hint else ""))


class WriteFailed(OSError):
    """A finished run could not be stored (a full disk): the runs stored before are kept.

    Attributes:
        folder: The results folder.
        rows: Every run finished in this invocation, as store rows, stored or not.
        kept: Runs the store holds.
    """

    def __init__(self, folder: Path, cause: OSError, rows: list[dict[str, Any]],
                 kept: int) -> None:
        where = cause.filename or folder
        super().__init__(cause.errno, f"cannot write {where}: {cause.strerror or cause}")
        self.folder, self.rows, self.kept = folder, rows, kept

    def __str__(self) -> str:
        return str(self.strerror)


PARQUET_MAGIC = b"PAR1"


def damage(path: Path, err: BaseException | None = None) -> str:
    """Why a file could not be read, in a few words (empty, truncated, not Parquet, ...)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(4)
            handle.seek(max(0, size - 4))
            tail = handle.read(4)
    except OSError as os_err:
        return f"unreadable: {os_err.strerror or os_err}"
    if size == 0:
        return "empty, 0 bytes"
    if path.suffix == ".parquet":
        if head == PARQUET_MAGIC and tail != PARQUET_MAGIC:
            return f"truncated, {size} bytes"
        if head != PARQUET_MAGIC:
            return "not a Parquet file"
    return str(err).splitlines()[0] if err is not None and str(err).strip() else "unreadable"


def read_parquet(path: Path, columns: Sequence[str] = ()) -> pd.DataFrame:
    """A Parquet file as a DataFrame, refusing a damaged one or one without ``columns``.

    Raises:
        DamagedFileError: The file cannot be read, or lacks one of ``columns``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        frame = pq.read_table(path).to_pandas()
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException, ValueError) as err:
        raise DamagedFileError({path: damage(path, err)}) from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DamagedFileError({path: f"no column {', '.join(missing)}"})
    return frame


def read_json(path: Path) -> Any:
    """A JSON document, refusing a damaged one.

    Raises:
        DamagedFileError: The file cannot be read or is not JSON.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as err:
        reason = damage(path, err)
        if isinstance(err, ValueError) and reason != "empty, 0 bytes":
            reason = "not JSON"
        raise DamagedFileError({path: reason}) from None


def ensure_writable(folder: Path) -> Path:
    """Check, before any work, that results can be written to ``folder``.

    Folders that this check has to create are removed again, so that a run
    that fails later leaves nothing behind; the writers create them for real.
    """
    made: list[Path] = []
    try:
        for parent in reversed([folder, *folder.parents]):
            if not parent.exists():
                parent.mkdir()
                made.append(parent)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(f"cannot write results to {folder}: {err.strerror or err}") from None
    finally:
        for path in reversed(made):
            path.rmdir()
    return folder


@contextlib.contextmanager
def folder_or_temporary(folder: Path | None, kind: str) -> Iterator[Path]:
    """``folder``, or a temporary folder removed at the end (results only kept in memory)."""
    if folder is not None:
        yield Path(folder)
        return
    with scratch.temporary(kind) as tmp:
        yield Path(tmp)


def pyplot() -> Any:
    """Matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Lay a figure out, write it as PNG atomically and close it."""
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    pyplot().close(fig)
    return path


def write_json(path: Path, data: Any) -> Path:
    """Write a JSON document atomically."""
    return write_text(path, json.dumps(data, indent=2) + "\n")


def write_summary(folder: Path, doc: Mapping[str, Any], log: str = "") -> Path:
    """``summary.json`` (a command's ``--json`` document, with the time) and ``log.txt``."""
    write_json(folder / "summary.json", {**doc, "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    if log:
        write_text(folder / "log.txt", log)
    return folder


def write_parquet(path: Path, frame: pd.DataFrame) -> Path:
    """Write a DataFrame as Parquet atomically."""
    return atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def plain(value: Any) -> Any:
    """Plain JSON and TOML values, the one conversion every writer uses.

    Models and dataclasses become tables, tuples lists, NumPy scalars Python numbers and
    NaN None (JSON has no NaN); ``None`` values of a table are left out (TOML has no null).
    """
    if hasattr(value, "model_dump") and not isinstance(value, type):
        value = {name: getattr(value, name) for name in type(value).model_fields}
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # NumPy scalars
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def toml_text(data: Mapping[str, Any]) -> str:
    """Nested plain values as TOML (``None`` values left out)."""
    import tomli_w

    return tomli_w.dumps(plain(data))


def write_toml(path: Path, data: Mapping[str, Any]) -> Path:
    """Write nested plain values as a TOML file atomically."""
    return write_text(path, toml_text(data))
