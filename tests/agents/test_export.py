"""Edge export: TorchScript and ONNX files decide as the trained network does, carry their metadata,
run as controllers, and refuse bad input with one line."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from agents import checkpoint, make_controller
from agents.export import (
    EdgePolicy,
    ExportError,
    calibration_observations,
    equalise,
    export_policy,
)
from agents.exported import ExportedController, load_exported
from agents.models import SignalNetwork
from agents.trained import TrainedPolicyError
from experiments.cli import app
from tests.conftest import assert_bad_input

runner = CliRunner()

OBS_DIMS, PHASES = [10, 7, 10], [4, 2, 3]

RUNTIMES = ["torchscript", pytest.param("onnx", marks=pytest.mark.skipif(
    not all(__import__("importlib").util.find_spec(m) for m in ("onnx", "onnxruntime")),
    reason="the edge extra (onnx, onnxruntime) is not installed"))]

INT8_AGREEMENT = 0.9
"""Share of random observations on which the int8 export must pick fp32's phase. Dynamic int8
moves scores by about 1% of their range, so only near-ties flip; trained policies agree more
(the README's delay figures), random weights and inputs are the harder case."""


def save_policy(run: Path, *, shared: bool = True, hidden: tuple[int, ...] = (32, 32),
                obs_norm: bool = False, seed: int = 0, kind: str = "q") -> SignalNetwork:
    """A run directory holding a checkpoint with a random policy, as training writes it."""
    torch.manual_seed(seed)
    net = SignalNetwork(OBS_DIMS, PHASES, hidden, shared=shared, kind=kind)
    policy = {"kind": kind, "obs_dims": OBS_DIMS, "num_phases": PHASES, "hidden": list(hidden),
              "shared": shared, "observation": "queue", "tls_ids": ["a", "b", "c"],
              "network": "toy", "decision_interval": 5.0, "net": net.state_dict()}
    if obs_norm:
        policy["obs_norm"] = {"mean": torch.rand(10) * 0.3, "std": torch.rand(10) + 0.5,
                              "count": 123.0}
    checkpoint.save(run / "checkpoints" / "last.pt", {"policy": policy})
    return net.eval()


def reference_phases(net: SignalNetwork, obs: torch.Tensor, agent: torch.Tensor,
                     norm: dict | None = None) -> np.ndarray:
    x = obs if norm is None else (obs - norm["mean"]) / norm["std"]
    with torch.no_grad():
        scores, _ = net(x, agent)
    return scores.argmax(dim=1).numpy()


def random_batch(n: int = 300, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    agent = torch.randint(0, 3, (n,), generator=gen)
    obs = torch.rand(n, 10, generator=gen)
    obs[agent == 1, 7:] = 0.0  # intersection b has 7 features, padded with zeros
    return obs, agent


@pytest.mark.parametrize("fmt", RUNTIMES)
@pytest.mark.parametrize("shared, obs_norm, kind", [
    (True, False, "q"), (False, True, "q"), (True, True, "actor-critic"),
])
def test_fp32_export_decides_exactly_as_the_torch_policy(
    tmp_path: Path, fmt: str, shared: bool, obs_norm: bool, kind: str
) -> None:
    net = save_policy(tmp_path, shared=shared, obs_norm=obs_norm, kind=kind)
    path = export_policy(tmp_path, fmt)
    assert path == tmp_path / "edge" / f"policy-fp32{'.pt' if fmt == 'torchscript' else '.onnx'}"
    runtime = load_exported(path)
    obs, agent = random_batch()
    norm = checkpoint.load(tmp_path / "checkpoints" / "last.pt")["policy"].get("obs_norm")
    expected = reference_phases(net, obs, agent, norm)
    got = runtime(obs.numpy(), agent.numpy())
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)
    assert all(got[agent.numpy() == i].max() < n for i, n in enumerate(PHASES))  # masked
    one = runtime(obs[:1].numpy(), agent[:1].numpy())  # batch 1, as on the device
    assert one.tolist() == expected[:1].tolist()


@pytest.mark.parametrize("fmt", RUNTIMES)
def test_int8_export_agrees_on_most_observations(tmp_path: Path, fmt: str) -> None:
    net = save_policy(tmp_path, obs_norm=True)
    runtime = load_exported(export_policy(tmp_path, fmt, quantize="int8"))
    obs, agent = random_batch(1000)
    norm = checkpoint.load(tmp_path / "checkpoints" / "last.pt")["policy"]["obs_norm"]
    agreement = (runtime(obs.numpy(), agent.numpy())
                 == reference_phases(net, obs, agent, norm)).mean()
    assert agreement >= INT8_AGREEMENT
    assert runtime.meta["precision"] == "int8"


@pytest.mark.parametrize("fmt", RUNTIMES)
def test_int8_is_at_most_half_the_size_of_fp32(tmp_path: Path, fmt: str) -> None:
    # the size of the grid4x4 policies: 45 features, 8 phases, two hidden layers of 64
    torch.manual_seed(0)
    net = SignalNetwork([45] * 4, [8] * 4, (64, 64))
    policy = {"kind": "q", "obs_dims": [45] * 4, "num_phases": [8] * 4, "hidden": [64, 64],
              "shared": True, "observation": "queue", "tls_ids": list("abcd"),
              "network": "toy", "decision_interval": 5.0, "net": net.state_dict()}
    checkpoint.save(tmp_path / "checkpoints" / "last.pt", {"policy": policy})
    fp32 = export_policy(tmp_path, fmt).stat().st_size
    int8 = export_policy(tmp_path, fmt, quantize="int8").stat().st_size
    assert int8 <= 0.5 * fp32, (int8, fp32)


@pytest.mark.parametrize("fmt", RUNTIMES)
def test_the_file_carries_its_metadata(tmp_path: Path, fmt: str) -> None:
    save_policy(tmp_path, obs_norm=True)
    out = tmp_path / "elsewhere" / "signal.bin"
    meta = load_exported(export_policy(tmp_path, fmt, quantize="int8", out=out)).meta
    assert meta["format"] == "greenphase.edge" and meta["runtime"] == fmt
    assert meta["tls_ids"] == ["a", "b", "c"] and meta["obs_dims"] == OBS_DIMS
    assert meta["obs_size"] == 10 and meta["num_phases"] == PHASES
    assert meta["observation"] == "queue" and meta["decision_interval"] == 5.0
    assert len(meta["obs_norm"]["mean"]) == 10 and meta["obs_norm"]["count"] == 123.0


@pytest.mark.parametrize("fmt", RUNTIMES)
def test_exported_controller_survives_pickling(tmp_path: Path, fmt: str) -> None:
    save_policy(tmp_path)
    path = export_policy(tmp_path, fmt)
    controller = make_controller(f"exported:{path}")
    assert isinstance(controller, ExportedController)
    assert controller.name == f"exported:{path}"
    copy = pickle.loads(pickle.dumps(controller))  # how it reaches the simulation's process
    obs, agent = random_batch(20)
    np.testing.assert_array_equal(copy.runtime(obs.numpy(), agent.numpy()),
                                  controller.runtime(obs.numpy(), agent.numpy()))


def test_edge_policy_matches_the_network_in_eager_mode() -> None:
    torch.manual_seed(3)
    net = SignalNetwork(OBS_DIMS, PHASES, (16,), shared=False).eval()
    obs, agent = random_batch()
    np.testing.assert_array_equal(EdgePolicy(net)(obs, agent).numpy(),
                                  reference_phases(net, obs, agent))


def test_equalising_keeps_the_decisions_and_spans_every_feature_over_minus_one_to_one() -> None:
    torch.manual_seed(4)
    net = SignalNetwork(OBS_DIMS, PHASES, (16,)).eval()
    norm = {"mean": torch.rand(10) * 0.1, "std": torch.rand(10) + 0.5}
    module = EdgePolicy(net, norm["mean"], norm["std"])
    scale = torch.tensor([0.01] * 5 + [1.0] * 5)  # queue-like and speed-like features
    calibration = torch.rand(500, 10) * scale
    calibration[:, 9] = 0.0  # a feature that never moved: left alone
    eq = equalise(module, (calibration - norm["mean"]) / norm["std"])
    spread = (calibration - eq.mean) / eq.std
    assert spread[:, :9].abs().amax(dim=0).allclose(torch.ones(9), atol=1e-5)
    assert eq.std[9] == module.std[9]
    obs, agent = random_batch()
    obs = obs * scale
    np.testing.assert_array_equal(eq(obs, agent).numpy(), module(obs, agent).numpy())
    np.testing.assert_array_equal(module(obs, agent).numpy(),
                                  reference_phases(net, obs, agent, norm))


def test_calibration_comes_from_the_replay_buffers(tmp_path: Path) -> None:
    save_policy(tmp_path)
    assert calibration_observations(tmp_path) is None  # no training state: no calibration
    data = checkpoint.load(tmp_path / "checkpoints" / "last.pt")
    payload = {k: v for k, v in data.items() if k not in ("format", "version")}
    dqn = {"buffer": {"obs": torch.rand(30, 10)}}
    checkpoint.save(tmp_path / "checkpoints" / "last.pt", {**payload, "learner": dqn})
    got = calibration_observations(tmp_path)
    assert got is not None and torch.equal(got, dqn["buffer"]["obs"])
    clients = {"clients": [{"buffer": {"obs": torch.full((4, 10), float(i))}} for i in range(3)]}
    checkpoint.save(tmp_path / "checkpoints" / "last.pt", {**payload, "learner": clients})
    got = calibration_observations(tmp_path / "checkpoints" / "last.pt")
    assert got is not None and got.shape == (12, 10) and set(got[:, 0].tolist()) == {0.0, 1, 2}
    meta = load_exported(export_policy(tmp_path, "torchscript", quantize="int8")).meta
    assert meta["calibration_rows"] == 12


def test_export_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(TrainedPolicyError, match="holds no trained policy"):
        export_policy(tmp_path, "torchscript")
    save_policy(tmp_path)
    with pytest.raises(ExportError, match="unknown export format"):
        export_policy(tmp_path, "tflite")
    with pytest.raises(ExportError, match="unknown quantisation"):
        export_policy(tmp_path, "onnx", quantize="int4")
    with pytest.raises(ExportError, match="not found"):
        load_exported(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(ExportError):
        load_exported(junk)


# ------------------------------------------------------------------ command line
def test_export_command_writes_the_file(tmp_path: Path) -> None:
    save_policy(tmp_path)
    out = tmp_path / "policy.pt"
    result = runner.invoke(app, ["export", str(tmp_path), "--format", "torchscript",
                                 "--quantize", "int8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and f"exported:{out}" in result.stdout
    assert load_exported(out).meta["precision"] == "int8"


def test_export_of_a_run_with_no_policy(tmp_path: Path) -> None:
    assert_bad_input(runner.invoke(app, ["export", str(tmp_path)]), "no trained policy")


def test_export_unknown_format(tmp_path: Path) -> None:
    save_policy(tmp_path)
    assert_bad_input(runner.invoke(app, ["export", str(tmp_path), "--format", "tflite"]),
                     "--format", "tflite")


def test_export_unknown_quantisation(tmp_path: Path) -> None:
    save_policy(tmp_path)
    assert_bad_input(runner.invoke(app, ["export", str(tmp_path), "--quantize", "int4"]),
                     "--quantize", "int4")


def test_export_of_a_corrupt_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"garbage")
    assert_bad_input(runner.invoke(app, ["export", str(tmp_path)]), "unreadable checkpoint")


def test_compare_with_an_unreadable_export(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    assert_bad_input(runner.invoke(app, ["compare", "-c", f"exported:{junk}"]), "junk.onnx")
