"""Processes that end with the process that started them, and leave Ctrl-C to it.

Whatever greenphase starts (the simulation server and its forked episodes, a pool's
workers, SUMO under TraCI) ends when its parent ends, by any signal, SIGKILL
included: on Linux through the parent-death signal (``prctl(PR_SET_PDEATHSIG)``),
besides the pipes each one watches. Ctrl-C reaches the terminal's whole process
group; the parent handles it, the others ignore it and end with the parent.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Iterator

from networks import scratch

__all__ = ["die_with_parent", "dying_with_this_process", "follow_parent",
           "interrupts_deferred", "on_main_thread", "remove_stale_folders"]

PR_SET_PDEATHSIG = 1
"""Linux's ``prctl`` option: a signal for this process when its parent thread ends."""


def die_with_parent(parent: int) -> None:
    """Have this process killed when ``parent``, the process that started it, ends.

    Linux sends the signal when the parent *thread* that started this process
    ends, so only a process started from its parent's main thread should ask. A
    parent that died before the request leaves this process adopted: it exits at
    once. Elsewhere than on Linux the pipes to the parent are the only watch.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(1)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C back in this thread while it starts a process.

    The process starts with Ctrl-C held back too, through the seconds of its imports,
    until :func:`follow_parent` ignores it there; here it arrives when the block ends.
    """
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    except (AttributeError, OSError, ValueError):  # no POSIX signal masks
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def follow_parent(parent: int) -> None:
    """Leave Ctrl-C to ``parent`` (0: to whoever started this), and end when it ends.

    Ctrl-C reaches the whole process group: the process that started this one
    handles it, and this one ends with it, without a traceback of its own.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # an interrupt held back is dropped
    with contextlib.suppress(AttributeError, OSError, ValueError):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if parent:
        die_with_parent(parent)


def on_main_thread() -> bool:
    """Whether this is the main thread (the one whose end is the process's end)."""
    return threading.current_thread() is threading.main_thread()


_SWEPT: list[int] = []


def remove_stale_folders() -> None:
    """Once per process: remove the temporary folders that killed processes left."""
    if os.getpid() not in _SWEPT:
        _SWEPT.append(os.getpid())
        scratch.remove_stale()


# Runs SUMO in place of a short Python process that first asks Linux to kill it when
# its parent ends: SUMO under TraCI outlives a killed client, waiting on its socket.
_DIES_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    f"ctypes.CDLL(None).prctl({PR_SET_PDEATHSIG}, int(signal.SIGKILL), 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]): sys.exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def dying_with_this_process(cmd: list[str]) -> list[str]:
    """A command line that runs ``cmd`` and ends it when this process ends, however it ends.

    Linux ends it when the *thread* that started it ends, so only a command started
    from the main thread is wrapped; elsewhere ``cmd`` is returned as it is.
    """
    if not sys.platform.startswith("linux") or not on_main_thread():
        return cmd
    return [sys.executable, "-S", "-c", _DIES_WITH_PARENT, str(os.getpid()), *cmd]
