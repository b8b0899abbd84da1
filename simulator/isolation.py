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
closes its standard input.
"""

from __future__ import annotations

import atexit
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from simulator.sumo import SumoError


def _send(conn: Connection, message: Any) -> None:
    # plain pickle: multiprocessing's own pickler would share torch tensors through
    # file descriptors, which only works between multiprocessing's own processes
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def _recv(conn: Connection) -> Any:
    return pickle.loads(conn.recv_bytes())


class _Server:
    """The parent's handle on the fork server (started on first use)."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="greenphase-fork-"))
        self.path = self.folder / "server.sock"
        # children start with what this process already uses (torch for learned policies)
        preload = [m for m in ("torch", "agents.trained") if m in sys.modules]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "simulator.isolation", str(self.path), *preload],
            stdin=subprocess.PIPE,
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
    if _SERVER is None or _SERVER.process.poll() is not None:
        _SERVER = _Server()
    return _SERVER


def start_server() -> None:
    """Start the fork server now rather than at the first episode (e.g. before timing)."""
    _server()


class ChildSimulation:
    """One episode's simulation in a forked child; commands go over a pipe.

    Args:
        scenario: the scenario to simulate.
        options: keyword arguments of :class:`~simulator.core.TrafficSimulation`.
    """

    def __init__(self, scenario: Any, options: dict[str, Any]) -> None:
        self._pipe = _server().connect()
        _send(self._pipe, (scenario, options))

    def send(self, command: str, arg: Any = None) -> None:
        """Send a command without waiting."""
        try:
            _send(self._pipe, (command, arg))
        except OSError:
            raise SumoError("the simulation process died") from None

    def receive(self, on_progress: Callable[[Any], None] | None = None) -> Any:
        """The next answer; progress messages go to ``on_progress``; errors are raised here."""
        while True:
            try:
                status, reply = _recv(self._pipe)
            except (EOFError, OSError):
                raise SumoError("the simulation process died") from None
            if status == "progress":
                if on_progress is not None:
                    on_progress(reply)
                continue
            if status == "error":
                raise reply
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


def _serve_child(conn: Connection) -> None:
    """In a forked child: build one simulation and obey the parent's commands."""
    from simulator.core import TrafficSimulation

    sim = None
    try:
        scenario, options = _recv(conn)
        while True:
            command, arg = _recv(conn)
            if command == "stop":
                return
            try:
                if sim is None:
                    sim = TrafficSimulation(scenario, **options)
                if command == "start":
                    reply: Any = sim._state(sim.start(arg))
                elif command == "step":
                    reply = sim._state(sim.step(arg))
                elif command == "stream":
                    # a SUMO program drives the signals: run ahead, one state per step
                    _send(conn, ("ok", sim._state(sim.start(arg))))
                    while not sim.done:
                        _send(conn, ("ok", sim._state(sim.step(None))))
                    continue
                elif command == "run":
                    controller, seed = arg
                    reply = sim.run(controller, seed,
                                    on_step=lambda t: _send(conn, ("progress", t)))
                elif command == "finish":
                    reply = sim.finish()
                else:
                    raise ValueError(f"unknown command {command!r}")
                _send(conn, ("ok", reply))
            except Exception as err:  # noqa: BLE001 - sent to the parent, raised there
                _send(conn, ("error", err))
    except (EOFError, OSError, KeyboardInterrupt):
        pass
    finally:
        if sim is not None:
            sim.close()


def _main(path: str, preload: list[str]) -> None:
    """The server: accept connections, fork a child for each, exit when stdin closes."""
    import importlib

    for module in ("libsumo", "simulator.core", "agents", *preload):
        importlib.import_module(module)  # once here, so every child starts with it

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped automatically
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    os.replace(path + ".tmp", path)  # the socket appears only once it is bound
    listener.listen(64)
    stdin = sys.stdin.fileno()
    while True:
        ready, _, _ = select.select([listener, stdin], [], [])
        if stdin in ready and not os.read(stdin, 1024):
            return  # the parent is gone
        if listener in ready:
            sock, _ = listener.accept()
            if os.fork() == 0:
                listener.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _serve_child(Connection(sock.detach()))
                os._exit(0)
            sock.close()


if __name__ == "__main__":
    os.environ.setdefault("LIBSUMO_AS_TRACI", "quiet")
    _main(sys.argv[1], sys.argv[2:])
