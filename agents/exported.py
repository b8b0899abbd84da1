"""An exported policy file as a controller: ``exported:FILE`` in a comparison.

The file (from :func:`agents.export.export_policy`) carries its metadata:
which signals, which observation, how long each intersection's vector is.
The controller computes those observations from the detector readings, pads
them, and asks the file's runtime (TorchScript through ``torch.jit.load``,
ONNX through an ``onnxruntime`` session, one thread) for each intersection's
phase, one intersection per call (batch 1, as on a device at the roadside);
the normalisation, the phase mask and the argmax are inside the file.

A controller travels to the simulation's process by pickle: it carries the
file's bytes and opens them again there, so the episode runs exactly the
file that was checked here.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.export import (
    EDGE_FORMAT,
    EDGE_VERSION,
    METADATA_FILE,
    METADATA_KEY,
    ExportError,
    quiet_exporters,
)
from agents.policy import PolicyController, observation_of
from simulator.sensors import Readings
from simulator.view import SignalView


class EdgeRuntime:
    """A loaded export: :attr:`meta` and a call from padded observations to phases."""

    meta: dict[str, Any]
    """The export's metadata (see :func:`agents.export.metadata`)."""

    def __call__(self, obs: np.ndarray, agent: np.ndarray) -> np.ndarray:
        """Phases (int64 ``[N]``) for ``obs`` (float32 ``[N, obs_size]``) and ``agent`` (int64)."""
        raise NotImplementedError


class TorchScriptRuntime(EdgeRuntime):
    """A TorchScript export, run by ``torch.jit``."""

    def __init__(self, data: bytes, path: Path) -> None:
        files = {METADATA_FILE: ""}
        try:
            with quiet_exporters():
                # torch warns once per process that quantized tensors are deprecated; spent
                # here, the notice is filtered, where jit.load would print it raw to stderr
                torch.quantize_per_tensor(torch.zeros(1), 1.0, 0, torch.qint8)
                self.module = torch.jit.load(io.BytesIO(data), map_location="cpu",
                                             _extra_files=files)
        except (RuntimeError, ValueError, OSError) as err:
            raise ExportError(f"unreadable TorchScript export {path}: {_first_line(err)}") from None
        self.module.eval()
        self.meta = _check_meta(files[METADATA_FILE], path)

    def __call__(self, obs: np.ndarray, agent: np.ndarray) -> np.ndarray:
        """Phases from the scripted module."""
        with torch.inference_mode():
            phases: torch.Tensor = self.module(torch.from_numpy(obs), torch.from_numpy(agent))
        return phases.numpy()


class OnnxRuntime(EdgeRuntime):
    """An ONNX export, run by an ``onnxruntime`` session on one CPU thread."""

    def __init__(self, data: bytes, path: Path) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ExportError(f"{path}: running an ONNX export needs onnxruntime "
                              f"(pip install 'greenphase[edge]'): {err}") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: the session's notices are not ours
        try:
            self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001  (onnxruntime raises its own untyped errors)
            raise ExportError(f"unreadable ONNX export {path}: {_first_line(err)}") from None
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta = _check_meta(props.get(METADATA_KEY, ""), path)

    def __call__(self, obs: np.ndarray, agent: np.ndarray) -> np.ndarray:
        """Phases from the session."""
        (phases,) = self.session.run(["phase"], {"obs": obs, "agent": agent})
        return np.asarray(phases)


def _first_line(err: BaseException) -> str:
    """The error's message whole, on one line (the line may wrap)."""
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _check_meta(text: str, path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(text) if text else None
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != EDGE_FORMAT:
        raise ExportError(f"{path} is not a greenphase export (no {METADATA_FILE} metadata)")
    if meta.get("version") != EDGE_VERSION:
        raise ExportError(f"{path}: export version {meta.get('version')!r}, "
                          f"this greenphase reads {EDGE_VERSION}")
    return meta


def load_exported(path: str | Path, data: bytes | None = None) -> EdgeRuntime:
    """Open an exported policy (from ``data`` if given): a zip archive is TorchScript, else ONNX."""
    path = Path(path)
    if data is None:
        if not path.is_file():
            raise ExportError(f"exported policy not found: {path}")
        data = path.read_bytes()
    if zipfile.is_zipfile(io.BytesIO(data)):
        return TorchScriptRuntime(data, path)
    return OnnxRuntime(data, path)


class ExportedController(PolicyController):
    """Acts with an exported policy file on the observations its metadata names."""

    name = "exported"
    error = ExportError
    made_for = "exported for"
    sizes_of = "the export's"

    def __init__(self, path: str | Path) -> None:
        self.path = self.source = Path(path)
        if not self.path.is_file():
            raise ExportError(f"exported policy not found: {self.path}")
        self._data = self.path.read_bytes()
        self.runtime = load_exported(self.path, self._data)
        self.meta = self.runtime.meta
        self.name = f"exported:{path}"  # type: ignore[misc]
        self.observation = observation_of(self.meta, self.path)
        self.needs_exits = self.observation.needs_exits  # type: ignore[misc]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["runtime"]  # a script module or an onnxruntime session: reopened from _data
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.runtime = load_exported(self.path, self._data)

    def act(self, views: Sequence[SignalView], readings: Readings, dt: float) -> np.ndarray:
        """The phase the exported policy picks at each intersection."""
        obs = self.padded(views, readings)
        # one intersection at a time, as its own device would decide: dynamic int8 scales
        # activations by the batch, and one signal's phase must not hang on another's detectors
        return np.concatenate([self.runtime(obs[i : i + 1], self._agents[i : i + 1])
                               for i in range(len(views))])
