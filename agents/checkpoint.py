"""Checkpoints: tensors and primitives only, so ``torch.load(weights_only=True)`` reads them.

A checkpoint is a dict with ``format`` and ``version`` keys; anything else
(a corrupt file, a foreign pickle, another program's checkpoint) is refused
with :class:`CheckpointError`, one line naming the file.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from agents.errors import CheckpointError
from networks.files import atomic_write

FORMAT = "greenphase.checkpoint"
VERSION = 1


def save(path: Path, payload: dict[str, Any]) -> Path:
    """Write a checkpoint atomically (temporary file, then rename)."""
    data = {"format": FORMAT, "version": VERSION, **payload}
    return atomic_write(path, lambda tmp: torch.save(data, tmp))


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; refuse anything that is not one of ours."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError,
            ValueError, AttributeError, TypeError, KeyError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise CheckpointError(f"unreadable checkpoint {path}: {reason}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a greenphase checkpoint")
    if data.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {data.get('version')!r}, this greenphase reads {VERSION}"
        )
    return data
