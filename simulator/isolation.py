"""Each libsumo episode in a fresh process, forked from a clean server.

libsumo holds its simulation inside the Python process, and its second and
later simulations in one process can differ from a fresh one with the same
seed (measured on cologne1: max-pressure with seed 1 gave 38.99 s or 38.66 s
mean delay depending on what ran before). A result must depend on its seed
only, so every episode runs in a child process forked from a server that has
imported the simulator but never simulated. Forking from that server (rather
than from the caller) also means the caller's own state never leaks in, and
a user's script needs no ``if __name__ == "__main__"`` guard.

The server is a plain ``python -m simulator.isolation`` process listening on
a Unix socket; it forks one child per connection and exits when its parent
closes its standard input. Neither outlives its parent, however that parent ends
(:mod:`simulator.processes`), and neither takes Ctrl-C: the process that asked for
the simulation handles the interrupt, and they end with it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes.util
import functools
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from networks import scratch
from simulator.processes import (
    die_with_parent,
    follow_parent,
    interrupts_deferred,
    on_main_thread,
    remove_stale_folders,
)
from simulator.sumo import ControllerFailed, SimulationFailed, SumoError

# Every message begins with one tag byte. Commands, replies and errors are pickled
# (plain pickle: multiprocessing's own pickler would share torch tensors through
# file descriptors, which only works between multiprocessing's own processes).
# A decision step's traffic is raw arrays, far cheaper than pickling: the parent's
# phases, and the child's states (:meth:`TrafficSimulation.pack_state`), several
# states to a message where the child runs ahead under a SUMO program.
_PICKLED, _PHASES, _STATES = b"P", b"A", b"S"

STREAM_BATCH = 32
"""States per message when the child runs ahead of its parent."""

FIRST_MESSAGE_TIMEOUT_S = 10.0
"""How long the server waits for a new connection's scenario before dropping it."""

PROGRESS_EVERY_S = 0.1
"""Shortest wall time between two progress messages of a whole-episode run."""


def _send(conn: Connection, message: Any) -> None:
    conn.send_bytes(_PICKLED + pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def _send_array(conn: Connection, tag: bytes, array: np.ndarray) -> None:
    conn.send_bytes(tag + array.tobytes())


def _recv(conn: Connection) -> tuple[bytes, Any]:
    """The next message: its tag, and the unpickled object or the raw array."""
    data = conn.recv_bytes()
    tag = data[:1]
    if tag == _PICKLED:
        return tag, pickle.loads(data[1:])
    dtype = np.int64 if tag == _PHASES else np.float64
    return tag, np.frombuffer(data, dtype=dtype, offset=1)


ALLOCATOR_VARIABLE = "GREENPHASE_ALLOCATOR"
"""Environment variable choosing the server's memory allocator: ``tcmalloc`` or ``system``."""


def allocator_library() -> str | None:
    """The allocator library the simulation server preloads, or None for the C library's own.

    SUMO allocates and frees many small objects at every simulated second
    (each vehicle's moves, each lane-area detector's notifications). Under
    gperftools' tcmalloc (Debian's ``libtcmalloc-minimal4``) the same episode
    runs faster, with byte-identical outputs; ``greenphase bench`` shows SUMO
    alone under both allocators. ``GREENPHASE_ALLOCATOR=system`` keeps the C
    library's allocator; where tcmalloc is not installed it is kept anyway.

    Raises:
        SumoError: the variable holds neither ``tcmalloc`` nor ``system``.
    """
    choice = os.environ.get(ALLOCATOR_VARIABLE, "tcmalloc").strip().lower()
    if choice == "system":
        return None
    if choice != "tcmalloc":
        raise SumoError(f"{ALLOCATOR_VARIABLE} must be 'tcmalloc' or 'system', got {choice!r}")
    return _find_tcmalloc()


@functools.cache
def _find_tcmalloc() -> str | None:
    return ctypes.util.find_library("tcmalloc_minimal")


def preloading(library: str | None, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A process environment (default: this one's) that preloads ``library``, if any."""
    out = dict(os.environ if env is None else env)
    if library:
        out["LD_PRELOAD"] = " ".join(p for p in (library, out.get("LD_PRELOAD")) if p)
    return out


_PRELOAD: list[str] = []

def preload(*modules: str) -> None:
    """Have the simulation server import ``modules``, so that every child starts with them.

    For what runs in the children besides the simulator: the controllers' modules, and
    torch for a learned policy (an import of seconds that every episode would pay
    again). Only those this process has itself imported by the time the server starts
    are preloaded, so a caller that never uses them does not wait for them; a module
    registered after the server started waits for the next server.
    """
    _PRELOAD.extend(m for m in modules if m not in _PRELOAD)


class _Server:
    """The parent's handle on the fork server (started on first use)."""

    def __init__(self) -> None:
        env = preloading(allocator_library())
        remove_stale_folders()
        self.owner = os.getpid()  # a forked copy of this process neither uses nor stops it
        self.folder = scratch.folder("fork")
        self.path = self.folder / "server.sock"
        # children start with what this process already uses (see preload())
        modules = [m for m in _PRELOAD if m in sys.modules]
        # 0: started from another thread, whose end must not end the server
        parent = self.owner if on_main_thread() else 0
        with interrupts_deferred():
            self.process = subprocess.Popen(
                [sys.executable, "-m", "simulator.isolation", str(self.path), str(parent),
                 *modules],
                stdin=subprocess.PIPE,
                env=env,
            )
        deadline = time.monotonic() + 60
        while not self.path.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SumoError("the simulation server did not start")
            time.sleep(0.01)
        atexit.register(self.stop)

    def connect(self) -> Connection:
        """A connection served by a freshly forked child."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(self.path))
        return Connection(sock.detach())

    def stop(self) -> None:
        """Stop the server (its children end with their connections)."""
        if os.getpid() != self.owner:
            return  # inherited through a fork: the server belongs to the original process
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.path.unlink(missing_ok=True)
        try:
            self.folder.rmdir()
        except OSError:
            pass


_SERVER: _Server | None = None


def _server() -> _Server:
    global _SERVER
    if _SERVER is None or _SERVER.owner != os.getpid() or _SERVER.process.poll() is not None:
        _SERVER = _Server()
    return _SERVER


def start_server() -> None:
    """Start the fork server now rather than at the first episode (e.g. before timing)."""
    _server()


class ChildSimulation:
    """One episode's simulation in a forked child; commands go over a pipe.

    Args:
        scenario: the scenario to simulate.
        options: its :class:`~simulator.options.SimulationOptions`.
        settings: the other keyword arguments of :class:`~simulator.core.TrafficSimulation`.
    """

    def __init__(self, scenario: Any, options: Any, settings: dict[str, Any]) -> None:
        self._pipe = _server().connect()
        self._states: deque[np.ndarray] = deque()  # states received ahead of their step
        _send(self._pipe, (scenario, options, settings))

    def send(self, command: str, arg: Any = None) -> None:
        """Send a command without waiting."""
        try:
            _send(self._pipe, (command, arg))
        except OSError:
            raise _died() from None

    def send_phases(self, phases: np.ndarray) -> None:
        """Ask for one decision step with these greens (its state comes from :meth:`next_state`)."""
        try:
            _send_array(self._pipe, _PHASES, np.ascontiguousarray(phases, dtype=np.int64))
        except OSError:
            raise _died() from None

    def _next(self, on_progress: Callable[[Any], None] | None = None) -> tuple[bytes, Any]:
        """The next reply or states; progress goes to ``on_progress``; errors are raised here."""
        while True:
            try:
                tag, message = _recv(self._pipe)
            except (EOFError, OSError):
                raise _died() from None
            if tag == _STATES:
                return tag, message
            status, reply = message
            if status == "progress":
                if on_progress is not None:
                    on_progress(reply)
                continue
            if status == "error":
                raise reply
            return tag, reply

    def next_state(self) -> np.ndarray:
        """The next decision step's state (see :meth:`TrafficSimulation.pack_state`)."""
        if not self._states:
            tag, message = self._next()
            if tag != _STATES:
                raise SumoError(f"the simulation process answered {message!r}, not a state")
            # one writable copy per message; each state is a view of it
            self._states.extend(message[1:].copy().reshape(-1, int(message[0])))
        return self._states.popleft()

    def receive(self, on_progress: Callable[[Any], None] | None = None) -> Any:
        """The next answer; progress messages go to ``on_progress``; errors are raised here."""
        tag, reply = self._next(on_progress)
        if tag == _STATES:
            raise SumoError("the simulation process sent a state where an answer was due")
        return reply

    def call(self, command: str, arg: Any = None) -> Any:
        """Send a command and wait for its answer."""
        self.send(command, arg)
        return self.receive()

    def stop(self) -> None:
        """End the child (it exits when its connection closes)."""
        try:
            _send(self._pipe, ("stop", None))
        except OSError:
            pass
        self._pipe.close()


def _died() -> SimulationFailed:
    return SimulationFailed("the simulation process died (killed, or it crashed)",
                            deterministic=False)


_OURS = ("agents", "simulator", "networks")
"""greenphase's packages: their errors say what they mean (bad input among them)."""


def _ours(err: BaseException) -> bool:
    return type(err).__module__.split(".")[0] in _OURS


class _Blamed:
    """A controller whose exceptions name it: it runs here, far from whoever chose it."""

    def __init__(self, controller: Any) -> None:
        self._controller = controller
        kind = type(controller)
        self._name = f"{kind.__module__}:{kind.__qualname__}"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._controller, name)

    def reset(self, views: Any, seed: int) -> None:
        try:
            self._controller.reset(views, seed)
        except Exception as err:  # noqa: BLE001 - the user's code: named, whatever it raised
            raise self._failed(err) from None

    def act(self, views: Any, readings: Any, dt: float) -> Any:
        try:
            return self._controller.act(views, readings, dt)
        except Exception as err:  # noqa: BLE001 - the user's code: named, whatever it raised
            raise self._failed(err) from None

    def _failed(self, err: Exception) -> Exception:
        if _ours(err):  # e.g. a trained policy refusing another network: bad input
            return err
        return ControllerFailed.of(err, f"controller {self._name} raised")


def _failure(err: Exception, sim: Any) -> Exception:
    """An error where the simulation runs, as one that crosses to the parent whole."""
    when = "" if sim is None else f" at simulated time {sim.time:g} s"
    if type(err).__module__.split(".")[0] in ("libsumo", "traci"):
        return SimulationFailed.of(err, f"SUMO failed{when}")
    if isinstance(err, SumoError):
        return SimulationFailed.of(err)
    if _ours(err):
        with contextlib.suppress(Exception):  # what cannot cross as it is is described
            pickle.loads(pickle.dumps(err))
            return err
    return SimulationFailed.of(err, f"the simulation failed{when}")


def _one_torch_thread() -> None:
    """A learned controller's small network decides on one thread, as it trained.

    torch would start a thread per core for each forward pass, which on a shared
    machine costs more than the pass (a cologne8 hour under a trained policy: 22 s
    on 2 cores' worth of threads, 9 s on one); the decisions are the same.
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _send_states(conn: Connection, states: list[np.ndarray]) -> None:
    """Several states in one message: their width first, then the states."""
    _send_array(conn, _STATES, np.concatenate([[len(states[0])], *states]))


def _progress(conn: Connection, end: float) -> Callable[[float], None]:
    """A step callback that reports the simulated time, at most every PROGRESS_EVERY_S."""
    last = -PROGRESS_EVERY_S

    def report(t: float) -> None:
        nonlocal last
        now = time.monotonic()
        if t >= end or now - last >= PROGRESS_EVERY_S:
            last = now
            _send(conn, ("progress", t))

    return report


def _serve_child(
    conn: Connection, scenario: Any, options: Any, settings: dict[str, Any]
) -> None:
    """In a forked child: build one simulation and obey the parent's commands."""
    from simulator.core import TrafficSimulation

    sim = None
    try:
        while True:
            try:
                tag, message = _recv(conn)
            except (EOFError, OSError):
                raise
            except Exception as err:  # noqa: BLE001 - e.g. a controller's module not importable here
                _send(conn, ("error", SimulationFailed.of(
                    err, "the simulation process cannot read what it was sent")))
                continue
            command, arg = ("step", message) if tag == _PHASES else message
            if command == "stop":
                return
            try:
                if sim is None:
                    sim = TrafficSimulation(scenario, options, **settings)
                if command == "start":
                    _send_states(conn, [sim.pack_state(sim.start(arg))])
                elif command == "step":  # the parent checked the phases
                    _send_states(conn, [sim.pack_state(sim.advance(arg))])
                elif command == "stream":
                    # a SUMO program drives the signals: run ahead, a batch of states at a time
                    _send_states(conn, [sim.pack_state(sim.start(arg))])
                    batch: list[np.ndarray] = []
                    while not sim.done:
                        batch.append(sim.pack_state(sim.step(None)))
                        if len(batch) == STREAM_BATCH or sim.done:
                            _send_states(conn, batch)
                            batch = []
                elif command == "run":
                    controller, seed = arg
                    _one_torch_thread()
                    result = sim.run(_Blamed(controller), seed,
                                     on_step=_progress(conn, sim.scenario.end))
                    _send(conn, ("ok", result))
                elif command == "finish":
                    _send(conn, ("ok", sim.finish()))
                else:
                    raise ValueError(f"unknown command {command!r}")
            except Exception as err:  # noqa: BLE001 - sent to the parent, raised there
                _send(conn, ("error", _failure(err, sim)))
    except (EOFError, OSError):
        pass
    finally:
        if sim is not None:
            sim.close()


def _main(path: str, parent: int, preload: list[str]) -> None:
    """The server: accept connections, fork a child for each, exit when stdin closes.

    ``parent``: the process to die with (0: the stdin watch only).
    """
    import importlib

    follow_parent(parent)

    for module in ("libsumo", "simulator.core", *preload):
        importlib.import_module(module)  # once here, so every child starts with it

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped automatically
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    listener.listen(64)
    os.replace(path + ".tmp", path)  # the socket appears only once it accepts connections
    stdin = sys.stdin.fileno()
    while True:
        ready, _, _ = select.select([listener, stdin], [], [])
        if stdin in ready and not os.read(stdin, 1024):
            return  # the parent is gone
        if listener in ready:
            sock, _ = listener.accept()
            conn = Connection(sock.detach())
            try:
                if not conn.poll(FIRST_MESSAGE_TIMEOUT_S):
                    raise TimeoutError("no scenario")
                _, (scenario, options, settings) = _recv(conn)
            except Exception:  # noqa: BLE001 - a client that went away or sent nonsense
                conn.close()
                continue
            _warm(scenario)
            server = os.getpid()
            if os.fork() == 0:
                die_with_parent(server)
                listener.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _serve_child(conn, scenario, options, settings)
                os._exit(0)
            conn.close()


def _warm(scenario: Any) -> None:
    """Parse the scenario's net here, once, so that every child inherits it parsed.

    Reading a file touches no simulation, so the server stays clean; a net that
    cannot be read is left for the child to report.
    """
    try:
        scenario.net  # noqa: B018 - cached by networks.read_net
    except Exception:  # noqa: BLE001 - the child raises it again, to its parent
        pass


if __name__ == "__main__":
    os.environ.setdefault("LIBSUMO_AS_TRACI", "quiet")
    _main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
