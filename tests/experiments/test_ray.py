"""The Ray backend: a sweep on a local Ray head at 127.0.0.1 gives the local backend's results."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from experiments import store
from experiments.cli import app
from experiments.spec import load
from experiments.sweep import RAY_MISSING, sweep
from simulator.metrics import KPI_NAMES

BIN = Path(sys.executable).parent
SPEC = """
name = "ray-small"
network = "cologne1"
horizon_s = 600
controllers = ["fixed", "max-pressure"]
seeds = [0]
"""

# a private test cluster on 127.0.0.1: the same authentication mode on both sides, whatever
# token a user's ~/.ray holds (`ray start` turns token auth on when it finds one)
RAY_ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """A one-node Ray cluster of 2 CPUs on 127.0.0.1, stopped with its process group after."""
    if importlib.util.find_spec("ray") is None:  # not imported here: it stays in its processes
        pytest.skip("ray is not installed: pip install 'greenphase[ray]'")
    port = free_port()
    temp = tempfile.mkdtemp(prefix="gp-ray-")  # short: Ray's socket paths must stay short
    log = Path(temp) / "head.log"
    with log.open("w") as out:
        head = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port",
             str(port), "--num-cpus", "2", "--include-dashboard", "false",
             "--disable-usage-stats", "--temp-dir", temp, "--block"],
            stdout=out, stderr=subprocess.STDOUT, env=RAY_ENV, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text():
            assert head.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the Ray head did not start"
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        # `ray stop` would stop every Ray on the machine: end only this head's processes
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        shutil.rmtree(temp, ignore_errors=True)


def test_a_sweep_on_a_ray_head_equals_the_local_backend(ray_head: str, tmp_path: Path) -> None:
    spec = tmp_path / "ray-small.toml"
    spec.write_text(SPEC)
    done = subprocess.run(
        [str(BIN / "greenphase"), "sweep", str(spec), "--backend", "ray", "--address", ray_head,
         "--out", str(tmp_path / "ray"), "--json"],
        capture_output=True, text=True, timeout=300, env=RAY_ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(done.stdout)
    assert doc["backend"] == "ray" and doc["finished"] == 2 and doc["failed"] == 0

    local = sweep(load(spec), tmp_path / "local", workers=2, report=False)
    assert local.finished == 2
    # a failed attempt (retried) leaves its own row; compare the finished runs
    on_ray = store.read(tmp_path / "ray").query("status == 'ok'").set_index("hash")
    here = store.read(tmp_path / "local").query("status == 'ok'").set_index("hash")
    assert sorted(on_ray.index) == sorted(here.index)
    for kpi in KPI_NAMES:
        assert on_ray[kpi].to_dict() == here.loc[on_ray.index, kpi].to_dict(), kpi
    assert not set(on_ray["worker_pid"]) & set(here["worker_pid"])  # really other processes


def test_without_ray_the_backend_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    spec = tmp_path / "ray-small.toml"
    spec.write_text(SPEC)
    result = CliRunner().invoke(app, ["sweep", str(spec), "--backend", "ray",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"error: {RAY_MISSING}"
    assert not (tmp_path / "out").exists()
