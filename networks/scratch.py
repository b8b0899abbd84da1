"""Temporary folders that a killed process does not leave behind for good.

A process killed by SIGKILL runs no ``finally`` and no ``atexit``, so its temporary
folders stay. Every greenphase temporary folder is named
``greenphase-<kind>-<pid>-<random>`` after the process that made it, and
:func:`remove_stale` (called when a command or a simulation server starts) removes
those whose process is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["NAME", "folder", "remove_stale", "temporary"]

NAME = re.compile(r"greenphase-(?P<kind>[a-z0-9]+)-(?P<pid>[0-9]+)-[a-z0-9_]+")
"""The name of a greenphase temporary folder (``mkdtemp``'s random part is ``[a-z0-9_]``)."""

_KIND = re.compile(r"[a-z0-9]+")


def folder(kind: str, parent: Path | None = None) -> Path:
    """A new temporary folder named after ``kind`` and this process; the caller removes it.

    Args:
        kind: What the folder is for, in lower-case letters and digits (``sim``, ``fork``).
        parent: Where to make it (default: the system's temporary folder).
    """
    if not _KIND.fullmatch(kind):
        raise ValueError(f"a temporary folder's kind is lower-case letters and digits: {kind!r}")
    return Path(tempfile.mkdtemp(prefix=f"greenphase-{kind}-{os.getpid()}-", dir=parent))


@contextlib.contextmanager
def temporary(kind: str, parent: Path | None = None) -> Iterator[Path]:
    """:func:`folder` as a context: the folder is removed when the block ends."""
    path = folder(kind, parent)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:  # a zombie has ended: only its exit status waits to be collected
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2:][:1] != "Z"


def remove_stale(parent: Path | None = None) -> list[Path]:
    """Remove this user's greenphase temporary folders whose process has ended.

    A pid reused by a new process keeps its old folder until that process ends too;
    a folder of a live process is never touched.

    Returns:
        The folders removed.
    """
    root = Path(parent if parent is not None else tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    uid = os.getuid()
    for entry in entries:
        match = NAME.fullmatch(entry.name)
        if match is None or _alive(int(match["pid"])):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat().st_uid != uid:
                continue
        except OSError:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        if not os.path.lexists(entry.path):
            removed.append(Path(entry.path))
    return removed
