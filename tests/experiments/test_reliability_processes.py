"""Nothing left running, no temporary folder kept for good, every failure named in one line.

The commands run as the user runs them (the console script, in its own session), so that
what the simulation servers and pool workers print and what they leave behind is seen.
Processes are found by scanning ``/proc`` for parent ids: a killed command's descendants
are recorded before the kill, since they would be adopted by init after it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from experiments import store
from experiments.executor import one_line
from experiments.spec import load
from experiments.sweep import sweep
from networks import Scenario, scratch
from simulator.sumo import SimulationFailed

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

GREENPHASE = Path(sys.executable).parent / "greenphase"

# a user's controllers, importable by the command, its workers and their simulations
SUPPORT = '''
from agents.classic import MaxPressure


class Raises(MaxPressure):
    """A controller with a bug that shows at its fifth decision."""

    def reset(self, views, seed):
        super().reset(views, seed)
        self.steps = 0

    def act(self, views, readings, dt):
        self.steps += 1
        if self.steps == 5:
            raise ValueError("no phase for lane 3 " + "x" * 300)
        return super().act(views, readings, dt)
'''


# ------------------------------------------------------------------ processes
def _parents() -> dict[int, int]:
    """Every process's parent id."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                out[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def _descendants(pid: int) -> set[int]:
    parents = _parents()
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        kids = [p for p, pp in parents.items() if pp == parent and p not in found]
        found.update(kids)
        todo += kids
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Command:
    """A greenphase command started in its own session, its descendants watched."""

    def __init__(self, args: list[str], tmpdir: Path, log: Path) -> None:
        self.log = log
        env = {**os.environ, "TMPDIR": str(tmpdir)}
        with log.open("wb") as err:
            # Ctrl-C as a terminal's foreground job has it: a test run in the background
            # of a shell would otherwise hand its ignored SIGINT down to the command
            self.proc = subprocess.Popen([str(GREENPHASE), *args], start_new_session=True,
                                         stdout=subprocess.DEVNULL, stderr=err, env=env,
                                         preexec_fn=_default_sigint)
        self.seen: dict[int, str] = {}

    def wait_for(self, ready: Callable[[dict[int, str]], bool], timeout: float = 90) -> None:
        """Record descendants until ``ready`` says they are all there."""
        deadline = time.monotonic() + timeout
        while True:
            for pid in _descendants(self.proc.pid):
                # read again: a process seen between its fork and its exec changes its name
                self.seen[pid] = _cmdline(pid) or self.seen.get(pid, "")
            if ready(self.seen):
                return
            assert self.proc.poll() is None, f"ended too soon: {self.log.read_text()}"
            assert time.monotonic() < deadline, f"not ready: {self.seen}"
            time.sleep(0.05)

    def survivors(self, within: float = 10) -> list[str]:
        """The recorded descendants still alive after ``within`` seconds."""
        deadline = time.monotonic() + within
        while any(_alive(p) for p in self.seen) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [f"{p} {self.seen[p]}" for p in self.seen if _alive(p)]
        for pid in self.seen:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)  # never leave them to the next test
        return left

    def stderr(self) -> str:
        return self.log.read_text()


def servers(seen: dict[int, str]) -> list[int]:
    return [p for p, cmd in seen.items() if "simulator.isolation" in cmd]


def simulating(seen: dict[int, str]) -> bool:
    """A simulation server has forked an episode's process (its copy, same command line)."""
    parents = _parents()
    return any(parents.get(p) in servers(seen) for p in servers(seen))


def pool_simulating(seen: dict[int, str]) -> bool:
    workers = [p for p, cmd in seen.items() if "spawn_main" in cmd]
    return len(workers) == 2 and simulating(seen)


@pytest.fixture()
def tmpdir_short() -> Iterator[Path]:
    """The commands' temporary folder: short, for the simulation server's Unix socket path."""
    path = Path(tempfile.mkdtemp(prefix="gp-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture()
def support(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The user controllers as module ``reliability_support``, everywhere; its name."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "reliability_support.py").write_text(SUPPORT)
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(code), os.environ.get("PYTHONPATH", "")) if p))
    return "reliability_support"


def running(command: str, tmp_path: Path, tmpdir: Path) -> Command:
    """``sweep`` on two workers or ``compare`` in process, started and simulating."""
    spec = tmp_path / "long.toml"
    spec.write_text('name = "long"\nnetwork = "grid-1x1"\n'
                    'controllers = ["fixed", "max-pressure"]\nseeds = 300\n')  # outlasts the wait
    args, ready = (["sweep", str(spec), "--workers", "2"], pool_simulating) if (
        command == "sweep") else (["compare", "-n", "grid-1x1", "-c", "fixed,max-pressure",
                                   "-s", "4"], simulating)
    cmd = Command([*args, "--out", str(tmp_path / "out")], tmpdir, tmp_path / "err")
    cmd.wait_for(ready)
    return cmd


# ------------------------------------------------------------------ kills
@pytest.mark.parametrize("command", ["sweep", "compare"])
def test_a_sigkilled_command_leaves_no_process_and_the_next_run_removes_its_folders(
    grid1x1: Scenario, tmp_path: Path, tmpdir_short: Path, command: str,
) -> None:
    cmd = running(command, tmp_path, tmpdir_short)
    cmd.proc.kill()
    cmd.proc.wait()
    if command == "sweep":
        assert any("resource_tracker" in c for c in cmd.seen.values())
    assert len(servers(cmd.seen)) >= 2  # a server and an episode's process at least
    assert cmd.survivors() == []
    left = sorted(p.name for p in tmpdir_short.iterdir())
    assert any(name.startswith("greenphase-fork-") for name in left), left
    assert all(scratch.NAME.fullmatch(name) for name in left), left
    subprocess.run([str(GREENPHASE), "--help"], env={**os.environ, "TMPDIR": str(tmpdir_short)},
                   stdout=subprocess.DEVNULL, check=True)
    assert list(tmpdir_short.iterdir()) == []


# ------------------------------------------------------------------ interrupts
@pytest.mark.parametrize(("command", "signum", "kept"), [
    ("sweep", signal.SIGINT, "--resume"),  # Ctrl-C: the terminal signals the whole group
    ("compare", signal.SIGTERM, "store"),  # to the command alone
])
def test_an_interrupt_is_one_line_and_status_130_and_leaves_no_process(
    grid1x1: Scenario, tmp_path: Path, tmpdir_short: Path, command: str,
    signum: signal.Signals, kept: str,
) -> None:
    cmd = running(command, tmp_path, tmpdir_short)
    if signum == signal.SIGINT:
        os.killpg(cmd.proc.pid, signum)
    else:
        cmd.proc.send_signal(signum)
    assert cmd.proc.wait(timeout=30) == 130, cmd.stderr()
    lines = cmd.stderr().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted: "), cmd.stderr()
    assert kept in lines[0]
    assert cmd.survivors() == []
    if command == "compare":
        assert list(tmpdir_short.iterdir()) == []  # cleaned up on the way out


# ------------------------------------------------------------------ failures named
def _routes_with(scenario: Scenario, folder: Path, trip: Callable[[str, str, str], str],
                 depart: float | None = None) -> Path:
    """The scenario's route file with one more trip, ``trip(id, from, to)`` of its first.

    Inserted in departure order (SUMO skips a trip out of order), at ``depart`` or the
    first trip's departure.
    """
    text = scenario.route_files[0].read_text()
    first = re.search(r'<trip id="([^"]+)" depart="([^"]+)" from="([^"]+)" to="([^"]+)"', text)
    assert first is not None
    when = float(first[2]) if depart is None else depart
    line = trip(first[1], first[3], first[4]).replace("DEPART", f"{when:.2f}")
    lines = text.splitlines()
    at = next(i for i, old in enumerate(lines) if (m := re.search(r' depart="([^"]+)"', old))
              and float(m[1]) > when)
    lines.insert(at, line)
    path = folder / "bad.rou.xml"
    path.write_text("\n".join(lines) + "\n")
    return path


def unreachable(scenario: Scenario, folder: Path, depart: float = 0) -> Path:
    """A trip from the end of the first trip back to its start: the fringe has no way round."""
    return _routes_with(scenario, folder, lambda _, a, b: (
        f'    <trip id="nowhere" depart="DEPART" from="{b}" to="{a}"/>'), depart)


def duplicate(scenario: Scenario, folder: Path) -> Path:
    """The first trip's id used again, at the same time."""
    return _routes_with(scenario, folder, lambda vid, a, b: (
        f'    <trip id="{vid}" depart="DEPART" from="{a}" to="{b}"/>'))


def _compare(args: list[str], tmpdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(GREENPHASE), "compare", *args, "--end", "300", "-s", "1",
                           "--demand", "fixed"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TMPDIR": str(tmpdir)})


@pytest.mark.parametrize(("routes", "words"), [
    (unreachable, ["FatalTraCIError", "Vehicle 'nowhere' has no valid route"]),
    (duplicate, ["FatalTraCIError", "already exists"]),
])
def test_a_sumo_error_during_a_run_is_one_line_naming_the_run_and_status_1(
    grid1x1: Scenario, tmp_path: Path, tmpdir_short: Path,
    routes: Callable[[Scenario, Path], Path], words: list[str],
) -> None:
    net = shutil.copy(grid1x1.net_file, tmp_path / "mine.net.xml")  # a net of the user's own
    done = _compare(["--net", str(net), "--routes", str(routes(grid1x1, tmp_path)),
                     "--begin", "0", "-c", "fixed", "--out", str(tmp_path / "out")],
                    tmpdir_short)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("error: fixed on ") and "seed 0" in lines[0], lines[0]
    for word in ("SUMO failed", *words):
        assert word in lines[0], lines[0]


def test_a_user_controller_that_raises_is_one_line_naming_it_and_status_1(
    grid1x1: Scenario, tmp_path: Path, tmpdir_short: Path, support: str,
) -> None:
    done = _compare(["-n", "grid-1x1", "-c", f"fixed,{support}:Raises",
                     "--out", str(tmp_path / "out")], tmpdir_short)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"controller {support}:Raises raised" in lines[0], lines[0]
    assert "ValueError: no phase for lane 3 " + "x" * 300 in lines[0]  # whole, never cut


def test_a_deterministic_failure_is_not_retried_and_keeps_its_cause(
    grid1x1: Scenario, tmp_path: Path, support: str,
) -> None:
    routes = unreachable(grid1x1, tmp_path, depart=100)  # after the controller's bug shows
    spec = tmp_path / "bad.toml"
    net = shutil.copy(grid1x1.net_file, tmp_path / "mine.net.xml")
    spec.write_text(f'name = "bad"\nnet = "{net}"\nroutes = ["{routes}"]\n'
                    f'begin = 0\nend = 300\ncontrollers = ["fixed", "{support}:Raises"]\n'
                    'seeds = 1\n[demand]\nmode = "fixed"\n')
    retried: list[bool] = []
    result = sweep(load(spec), tmp_path / "out", workers=2, retries=2, report=False,
                   on_result=lambda unit, row, retry: retried.append(retry))
    assert retried == [False, False] and result.failed_attempts == 2
    rows = store.read(tmp_path / "out").set_index("controller")
    assert "Vehicle 'nowhere' has no valid route" in rows.loc["fixed", "error"]
    raised = rows.loc[f"{support}:Raises", "error"]
    assert f"controller {support}:Raises raised: ValueError: no phase for lane 3" in raised
    assert json.loads(json.dumps(result.to_json()))["failed"] == 2


# ------------------------------------------------------------------ pieces
def test_a_failure_crosses_processes_whole_and_says_whether_to_retry() -> None:
    import pickle

    err = SimulationFailed.of(RuntimeError("first line\nsecond line " + "y" * 400))
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, SimulationFailed) and back.deterministic
    assert str(back) == "RuntimeError: first line second line " + "y" * 400
    assert one_line(back) == str(back)
    assert not SimulationFailed.of(MemoryError()).deterministic
    assert one_line(ValueError("a\nb")) == "ValueError: a b"


def test_stale_temporary_folders_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = tmp_path / f"greenphase-sim-{gone.pid}-abc_12"
    live = tmp_path / f"greenphase-fork-{os.getpid()}-xyz"
    older = tmp_path / "greenphase-k_oa42nv"  # an older name, whose owner is unknown
    other = tmp_path / f"something-{gone.pid}-abc"
    for folder in (dead, live, older, other):
        folder.mkdir()
        (folder / "file").write_text("x")
    assert scratch.remove_stale(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (live, older, other))
    made = scratch.folder("sim", tmp_path)
    assert scratch.NAME.fullmatch(made.name) and f"-{os.getpid()}-" in made.name
    with scratch.temporary("tune", tmp_path) as path:
        assert path.is_dir()
    assert not path.exists()
