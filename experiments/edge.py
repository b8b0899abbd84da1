"""A trained policy on an edge device: file size, decision latency and delay, fp32 against int8.

For each runtime (TorchScript; ONNX when ``onnx`` and ``onnxruntime`` are
installed) and precision (fp32, int8), :func:`bench_edge` exports the policy
(:func:`agents.export.export_policy`) into ``RUN/edge/`` and measures:

- **size**: the file's bytes;
- **latency**: one decision is one intersection's padded observation (batch
  1) through the runtime on one thread (``torch.set_num_threads(1)``, an
  ``onnxruntime`` session with one intra- and one inter-op thread), numpy in,
  phase out, as :class:`agents.exported.ExportedController` calls it; after
  :data:`WARMUP` untimed calls, ``decisions`` calls are timed one by one with
  ``time.perf_counter_ns``; the median and the 99th percentile in
  microseconds;
- **delay**: ``exported:FILE`` controllers run on held-out seeds ``0..N-1``,
  the same seeds for every row; each int8 row is set against the fp32 row of
  its runtime.

A first row, ``torch:fp32``, is the trained network itself in eager PyTorch
(``trained:RUN`` for the delay): what the exports are checked against.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.table import Table

import networks
from agents.export import EdgePolicy, default_path, export_policy, normalisation
from agents.exported import load_exported
from agents.policy import load_policy, policy_options
from experiments.compare import compare
from networks import Scenario

WARMUP = 200
"""Untimed decisions before the timed ones (allocator, caches, lazy initialisation)."""

PRECISIONS: tuple[str | None, ...] = (None, "int8")
"""fp32 (no quantisation), then int8."""


class EagerPolicy:
    """The trained network in eager PyTorch, called like an export's runtime."""

    def __init__(self, run: Path) -> None:
        net, policy = load_policy(run)
        self.policy = EdgePolicy(net, *normalisation(policy, run)).eval()
        self.obs_size = net.obs_size
        self.signals = len(policy["tls_ids"])

    def __call__(self, obs: np.ndarray, agent: np.ndarray) -> np.ndarray:
        """Phases, as an export's runtime gives them."""
        with torch.inference_mode():
            return self.policy(torch.from_numpy(obs), torch.from_numpy(agent)).numpy()


def runtimes() -> tuple[list[str], list[str]]:
    """The export formats this installation can run, and those it cannot (with why)."""
    found = ["torchscript"]
    missing = []
    if all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime")):
        found.append("onnx")
    else:
        missing.append("onnx: needs onnx and onnxruntime (pip install 'greenphase[edge]')")
    return found, missing


def decision_latency(runtime: Callable[[np.ndarray, np.ndarray], np.ndarray],
                     obs_size: int, signals: int, decisions: int) -> tuple[float, float]:
    """Median and 99th-percentile microseconds of one batch-1 decision.

    Args:
        runtime: the policy, called with ``obs`` ``[1, obs_size]`` float32 and ``agent`` ``[1]``.
        obs_size: length of a padded observation.
        signals: intersections the policy serves (the agent index cycles over them).
        decisions: timed decisions.
    """
    rng = np.random.default_rng(0)
    obs = rng.random((decisions, 1, obs_size), dtype=np.float32)
    agent = (np.arange(decisions) % signals).astype(np.int64).reshape(-1, 1)
    for i in range(WARMUP):
        runtime(obs[i % decisions], agent[i % decisions])
    times = np.empty(decisions, dtype=np.int64)
    for i in range(decisions):
        start = time.perf_counter_ns()
        runtime(obs[i], agent[i])
        times[i] = time.perf_counter_ns() - start
    return float(np.median(times)) / 1e3, float(np.percentile(times, 99)) / 1e3


def bench_edge(
    run: Path,
    *,
    scenario: Scenario | None = None,
    seeds: int = 3,
    decisions: int = 2000,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Size, latency and delay of a run's policy, exported fp32 and int8, on one thread.

    Args:
        run: a training run directory (or a checkpoint).
        scenario: where the delay is measured (default: the network the policy was trained on).
        seeds: held-out SUMO seeds ``0..seeds-1``.
        decisions: timed decisions per row.
        progress: called with one line as each step finishes.

    Returns:
        ``{"run", "network", "begin_s", "end_s", "seeds", "decisions", "threads", "rows",
        "skipped"}``; each row is ``{"name", "runtime", "precision", "file", "bytes",
        "size_vs_fp32", "median_us", "p99_us", "mean_delay_s", "ci95_delay_s",
        "delay_vs_fp32_pct"}`` (``None`` where it does not apply). JSON-serialisable.
    """
    if seeds < 1 or decisions < 1:
        raise ValueError(f"seeds and decisions must be >= 1, got {seeds} and {decisions}")
    say = progress or (lambda _: None)
    _, policy = load_policy(run)
    if scenario is None:
        scenario = networks.get(policy.get("network") or "")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        eager = EagerPolicy(run)
        size, signals = eager.obs_size, eager.signals
        median, p99 = decision_latency(eager, size, signals, decisions)
        rows: list[dict[str, Any]] = [_row("torch", None, None, f"trained:{run}", median, p99)]
        say(f"torch fp32: median {median:.1f} us, p99 {p99:.1f} us")
        found, skipped = runtimes()
        for fmt in found:
            for quantize in PRECISIONS:
                path = export_policy(run, fmt, quantize=quantize,
                                     out=default_path(run, fmt, quantize))
                median, p99 = decision_latency(load_exported(path), size, signals, decisions)
                rows.append(_row(fmt, quantize, path, f"exported:{path}", median, p99))
                say(f"{fmt} {quantize or 'fp32'}: {path.stat().st_size} bytes, "
                    f"median {median:.1f} us, p99 {p99:.1f} us")
    finally:
        torch.set_num_threads(threads)
    controllers = [row.pop("controller") for row in rows]
    end = scenario.end

    def on_step(controller: str, seed: int, t: float) -> None:
        if t >= end:
            say(f"{controller} seed {seed}: episode done")

    comparison = compare(scenario, controllers, list(range(seeds)), policy_options(policy),
                         on_step=on_step)
    summary = comparison.summary.set_index("controller")
    for row, controller in zip(rows, controllers, strict=True):
        row["mean_delay_s"] = float(summary.loc[controller, "mean_delay_s"])
        row["ci95_delay_s"] = float(summary.loc[controller, "ci95_delay_s"])
    _relative_to_fp32(rows)
    return {
        "run": str(run), "network": scenario.name, "begin_s": scenario.begin,
        "end_s": scenario.end, "seeds": seeds, "decisions": decisions, "threads": 1,
        "rows": rows, "skipped": skipped,
    }


def _row(runtime: str, quantize: str | None, path: Path | None, controller: str,
         median: float, p99: float) -> dict[str, Any]:
    return {
        "name": f"{runtime}:{quantize or 'fp32'}", "runtime": runtime,
        "precision": quantize or "fp32", "file": None if path is None else str(path),
        "bytes": None if path is None else path.stat().st_size, "size_vs_fp32": None,
        "median_us": median, "p99_us": p99, "controller": controller,
        "mean_delay_s": None, "ci95_delay_s": None, "delay_vs_fp32_pct": None,
    }


def _relative_to_fp32(rows: list[dict[str, Any]]) -> None:
    """Each int8 row's size and delay against the fp32 row of the same runtime."""
    fp32 = {row["runtime"]: row for row in rows if row["precision"] == "fp32"}
    for row in rows:
        base = fp32.get(row["runtime"])
        if row["precision"] == "fp32" or base is None:
            continue
        if row["bytes"] is not None and base["bytes"]:
            row["size_vs_fp32"] = row["bytes"] / base["bytes"]
        if base["mean_delay_s"]:
            row["delay_vs_fp32_pct"] = (row["mean_delay_s"] / base["mean_delay_s"] - 1) * 100


def format_edge_table(result: dict[str, Any]) -> Table:
    """The result of :func:`bench_edge` as a table for the terminal."""
    table = Table(title=(
        f"{result['network']}: policy of {result['run']}, one thread, batch 1, "
        f"{result['decisions']} decisions; delay over seeds 0-{result['seeds'] - 1}"
    ))
    for col in ("policy", "bytes", "size vs fp32", "median us", "p99 us", "delay s",
                "delay vs fp32"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for row in result["rows"]:
        ratio, vs = row["size_vs_fp32"], row["delay_vs_fp32_pct"]
        table.add_row(
            row["name"], "—" if row["bytes"] is None else str(row["bytes"]),
            "—" if ratio is None else f"{ratio:.2f}",
            f"{row['median_us']:.1f}", f"{row['p99_us']:.1f}",
            f"{row['mean_delay_s']:.2f} ± {row['ci95_delay_s']:.2f}",
            "—" if vs is None else f"{vs:+.2f}%",
        )
    return table
