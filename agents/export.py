"""A trained policy for an edge controller: one file, TorchScript or ONNX, fp32 or int8.

The exported module takes the padded observations of a batch of
intersections, ``obs`` (``[N, obs_size]`` float32), and their indices,
``agent`` (``[N]`` int64), and returns the green phase of each (``[N]``
int64). Inside it are everything the decision needs after the detectors:
the observation normalisation the policy was trained with (``(x - mean) /
std``, when its checkpoint has ``obs_norm``), the network, the mask of the
phases each intersection has, and the argmax. Its metadata (signal ids,
observation sizes and name, normalisation, decision interval) travels in
the same file: a ``greenphase.json`` extra file in a TorchScript archive, a
``greenphase`` entry of an ONNX model's ``metadata_props``.

int8 is dynamic quantisation of the linear layers: int8 weights with a scale
per output channel, activations quantised on the fly
(``torch.ao.quantization.quantize_dynamic`` for TorchScript,
``onnxruntime.quantization.quantize_dynamic`` for ONNX). Detector features
differ in range by two orders of magnitude (a queue share rarely passes 0.1,
a mean speed share sits near 1), and the decisive ones are the small ones,
so before quantising, the int8 export folds a per-feature range into the
normalisation and the first layer: with ``mu`` and ``r`` the mean and the
largest deviation of each feature over observations from training (the
run's replay buffer), the module computes ``(x - mean - std mu) / (std r)``
and its first layer holds ``W r`` and ``b + W mu``: the same function in
fp32, and every feature now spans [-1, 1], so that no feature's weights or
values lose their precision to another's (as in Nagel et al., "Data-Free
Quantization Through Weight Equalization and Bias Correction", ICCV 2019,
and Xiao et al., "SmoothQuant", ICML 2023). A run without a replay buffer
(PPO) is quantised as it is.

The files leave out what an edge device never reads: the TorchScript
archive is written without its source-range debug records and compressed,
and the ONNX graph without per-node debug metadata and shape annotations.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from agents.checkpoint import load as load_checkpoint
from agents.errors import CheckpointError, TrainedPolicyError
from agents.models import MASKED, SignalNetwork
from agents.names import FORMATS, QUANTIZATIONS
from agents.policy import load_policy, policy_options
from networks import scratch
from networks.files import write_bytes

SUFFIXES = {"torchscript": ".pt", "onnx": ".onnx"}
EDGE_FORMAT = "greenphase.edge"
EDGE_VERSION = 1
METADATA_FILE = "greenphase.json"
"""The TorchScript extra file that holds the metadata."""
METADATA_KEY = "greenphase"
"""The ONNX ``metadata_props`` key that holds the metadata."""
CALIBRATION_ROWS = 20_000
"""Most observations from the replay buffer(s) that set the int8 feature ranges."""

# The exporters' own deprecation notices (torch.jit, torch.ao.quantization, the
# TorchScript-based ONNX exporter) say nothing about this module's use of them.
_TORCH_NOTICES = (
    r"`torch\.jit\.",
    r"torch\.ao\.quantization is deprecated",
    r"torch\.quantize_per_tensor",
    r"You are using the legacy TorchScript-based ONNX export",
    r"The feature will be removed",
)


class ExportError(TrainedPolicyError):
    """A policy that cannot be exported or an exported file that cannot be used; one line."""


@contextlib.contextmanager
def quiet_exporters() -> Iterator[None]:
    """Silence the exporters' known deprecation notices, here only."""
    with warnings.catch_warnings():
        for pattern in _TORCH_NOTICES:
            warnings.filterwarnings("ignore", message=pattern)
        yield


class EdgePolicy(nn.Module):
    """Normalise, score, mask and pick: padded observations in, one green phase per row out.

    Args:
        net: the trained network.
        mean: per-feature mean of the observation normalisation (``None``: none).
        std: per-feature standard deviation of the normalisation.
    """

    __constants__ = ["per_signal", "max_phases", "masked"]  # TorchScript: fixed at export
    if TYPE_CHECKING:  # registered buffers; TorchScript reads annotations its own way
        mean: torch.Tensor
        std: torch.Tensor
        valid: torch.Tensor

    def __init__(self, net: SignalNetwork, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None) -> None:
        super().__init__()
        self.bodies = copy.deepcopy(net.bodies)
        self.per_signal = not net.shared
        self.max_phases = net.max_phases
        self.masked = MASKED
        size = net.obs_size
        self.register_buffer("mean", torch.zeros(size) if mean is None else mean.float().clone())
        self.register_buffer("std", torch.ones(size) if std is None else std.float().clone())
        valid: torch.Tensor = net.valid  # type: ignore[assignment]  # a registered buffer
        self.register_buffer("valid", valid.clone())

    def forward(self, obs: torch.Tensor, agent: torch.Tensor) -> torch.Tensor:
        """The green phase of each row: ``obs`` ``[N, obs_size]``, ``agent`` ``[N]``."""
        x = (obs - self.mean) / self.std
        if self.per_signal:
            # every body on every row, then each row's own: no data-dependent control flow
            every = torch.stack([body(x) for body in self.bodies])
            index = agent.view(1, -1, 1).expand(1, x.shape[0], every.shape[2])
            out = every.gather(0, index).squeeze(0)
        else:
            out = self.bodies[0](x)
        scores = out[:, : self.max_phases].masked_fill(~self.valid[agent], self.masked)
        return scores.argmax(dim=1)


def normalisation(policy: dict[str, Any], run: Path | str = "") -> tuple[torch.Tensor | None,
                                                                        torch.Tensor | None]:
    """The ``obs_norm`` mean and std of a checkpoint's policy, or ``(None, None)``."""
    norm = policy.get("obs_norm")
    if norm is None:
        return None, None
    try:
        mean = torch.as_tensor(norm["mean"], dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(norm["std"], dtype=torch.float32).reshape(-1)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ExportError(f"{run}: unreadable obs_norm ({err})") from None
    size = max(policy["obs_dims"])
    if mean.numel() != size or std.numel() != size or not bool((std > 0).all()):
        raise ExportError(f"{run}: obs_norm does not fit the network's input of {size}")
    return mean, std


def calibration_observations(run: Path) -> torch.Tensor | None:
    """Network inputs the policy met in training: its replay buffer(s) in ``last.pt``, or None.

    A federated run has one buffer per client; each gives an equal share.
    """
    folder = run.parent if run.is_file() else run / "checkpoints"
    for path in dict.fromkeys([run, folder / "last.pt"]):
        if not path.is_file():
            continue
        try:
            learner = load_checkpoint(path).get("learner")
        except CheckpointError:
            continue
        if not isinstance(learner, dict):
            continue
        buffers = [learner.get("buffer")] + [c.get("buffer") for c in learner.get("clients", [])]
        obs = [b["obs"] for b in buffers if isinstance(b, dict) and len(b.get("obs", ())) > 0]
        if obs:
            share = max(1, CALIBRATION_ROWS // len(obs))
            return torch.cat([o[-share:] for o in obs]).float()
    return None


def equalise(module: EdgePolicy, observations: torch.Tensor) -> EdgePolicy:
    """The same function with every input feature scaled to [-1, 1] over ``observations``.

    ``observations`` are network inputs (after the policy's own normalisation).
    The first linear layer absorbs the shift and the scale; see the module's docstring.
    """
    eq = copy.deepcopy(module)
    mu = observations.mean(dim=0)
    reach = (observations - mu).abs().amax(dim=0)
    reach = torch.where(reach > 1e-6, reach, torch.ones_like(reach))  # constant: leave as is
    first = next(m for m in eq.bodies[0].modules() if isinstance(m, nn.Linear))
    with torch.no_grad():
        first.bias.add_(first.weight @ mu)
        first.weight.mul_(reach)
        eq.mean.add_(eq.std * mu)
        eq.std.mul_(reach)
    return eq


def metadata(policy: dict[str, Any], run: Path, fmt: str, quantize: str | None) -> dict[str, Any]:
    """What a controller needs to feed the exported module, as plain JSON values."""
    mean, std = normalisation(policy, run)
    norm = None
    if mean is not None and std is not None:
        norm = {"mean": mean.tolist(), "std": std.tolist(),
                "count": float(policy["obs_norm"].get("count", 0.0))}
    return {
        "format": EDGE_FORMAT, "version": EDGE_VERSION,
        "runtime": fmt, "precision": quantize or "fp32",
        "network": policy.get("network"), "tls_ids": list(policy["tls_ids"]),
        "obs_dims": list(policy["obs_dims"]), "obs_size": max(policy["obs_dims"]),
        "num_phases": list(policy["num_phases"]),
        "observation": policy.get("observation", "queue"),
        "missing_flags": bool(policy.get("missing_flags", False)),
        "decision_interval": policy_options(policy).decision_interval,
        "kind": policy.get("kind", "q"), "hidden": list(policy.get("hidden", [])),
        "shared": bool(policy.get("shared", True)),
        "obs_norm": norm,
        "inputs": {"obs": "float32 [N, obs_size], padded with zeros",
                   "agent": "int64 [N], index into tls_ids"},
        "output": {"phase": "int64 [N], green phase index"},
        "source": str(run),
    }


def default_path(run: Path, fmt: str, quantize: str | None) -> Path:
    """Where an export goes without ``--out``: ``RUN/edge/policy-<precision><suffix>``."""
    folder = run.parent if run.is_file() else run
    if run.is_file() and folder.name == "checkpoints":  # RUN/checkpoints/best.pt: RUN/edge/
        folder = folder.parent
    return folder / "edge" / f"policy-{quantize or 'fp32'}{SUFFIXES[fmt]}"


def export_policy(run: Path, fmt: str, *, quantize: str | None = None,
                  out: Path | None = None) -> Path:
    """Write a run's policy (``RUN`` a run dir or a checkpoint) as one file; return its path.

    Raises:
        ExportError: An unknown format or quantisation, or a missing optional dependency.
        TrainedPolicyError: The run holds no policy.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ExportError(
            f"unknown quantisation {quantize!r}; choose from {', '.join(QUANTIZATIONS)}"
        )
    net, policy = load_policy(run)
    mean, std = normalisation(policy, run)
    module = EdgePolicy(net, mean, std).eval()
    meta = metadata(policy, run, fmt, quantize)
    if quantize is not None:
        observations = calibration_observations(run)
        meta["calibration_rows"] = 0 if observations is None else len(observations)
        if observations is not None and observations.shape[1] == net.obs_size:
            module = equalise(module, observations)
    path = out or default_path(run, fmt, quantize)
    example = _example_inputs(len(policy["tls_ids"]), meta["obs_size"])
    if fmt == "torchscript":
        data = torchscript_bytes(module, meta, quantize)
    else:
        data = onnx_bytes(module, meta, quantize, example)
    try:
        write_bytes(path, data)
    except OSError as err:
        raise ExportError(f"cannot write {path}: {err.strerror or err}") from None
    return path


def _example_inputs(signals: int, obs_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    # two rows at least, so the exporters keep the batch dimension free
    rows = max(2, signals)
    generator = torch.Generator().manual_seed(0)
    return (torch.rand(rows, obs_size, generator=generator),
            torch.arange(rows, dtype=torch.long) % signals)


def torchscript_bytes(module: EdgePolicy, meta: dict[str, Any], quantize: str | None) -> bytes:
    """The module as a compact TorchScript archive with the metadata as an extra file."""
    with quiet_exporters():
        model: nn.Module = module
        if quantize == "int8":
            model = torch.ao.quantization.quantize_dynamic(
                module, {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig},
                dtype=torch.qint8,
            )
        scripted = torch.jit.script(model)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer, _extra_files={METADATA_FILE: json.dumps(meta)})
    return _compact_archive(buffer.getvalue())


def _compact_archive(archive: bytes) -> bytes:
    """The archive without ``*.debug_pkl`` records (source ranges for error messages), deflated."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as src, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if not info.filename.endswith(".debug_pkl"):
                dst.writestr(info.filename, src.read(info))
    return out.getvalue()


def onnx_bytes(module: EdgePolicy, meta: dict[str, Any], quantize: str | None,
               example: tuple[torch.Tensor, torch.Tensor]) -> bytes:
    """The module as an ONNX model (opset 20, batch dimension free), metadata in its props."""
    try:
        import onnx
    except ImportError as err:
        raise ExportError(f"ONNX export needs the edge extra (pip install 'greenphase[edge]'): "
                          f"{err}") from None
    with scratch.temporary("onnx") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        with quiet_exporters():
            # the TorchScript-based exporter: about 100 times faster here than the
            # torch.export one (dynamo=True), and the same graph for this module
            torch.onnx.export(
                module, example, str(fp32), input_names=["obs", "agent"],
                output_names=["phase"], dynamic_axes={"obs": {0: "batch"}, "agent": {0: "batch"}},
                opset_version=20, dynamo=False,
            )
        model = onnx.load(str(fp32))
        _strip_onnx(model)
        onnx.save(model, str(fp32))
        if quantize == "int8":
            model = _quantize_onnx(fp32, Path(tmp) / "int8.onnx")
            _strip_onnx(model)
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    return bytes(model.SerializeToString())


def _quantize_onnx(source: Path, target: Path) -> Any:
    import onnx

    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as err:
        raise ExportError(f"ONNX int8 needs onnxruntime (pip install 'greenphase[edge]'): "
                          f"{err}") from None
    # onnxruntime's quantiser advises pre-processing through the root logger; not needed here
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        logging.disable(previous)
    return onnx.load(str(target))


def _strip_onnx(model: Any) -> None:
    """Drop what only a debugger reads: per-node metadata and doc strings, shape annotations."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.graph.value_info[:]
    model.doc_string = ""
