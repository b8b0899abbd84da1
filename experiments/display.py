"""An X display for sumo-gui: the user's own, or a virtual one (Xvfb) started for a headless run.

sumo-gui is an X11 program. Where ``$DISPLAY`` is set it is used as it is; on a
server or in CI, :func:`display` starts Debian's ``Xvfb`` on a free display
number, points ``$DISPLAY`` at it for the duration of the block (SUMO's
processes inherit it), and stops it afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from simulator.processes import dying_with_this_process

SCREEN = "1280x1024x24"
"""The virtual screen: sumo-gui's window (and so its screenshots) fits inside it."""
FIRST_DISPLAY = 100
"""Virtual displays are looked for from ``:100`` up, clear of desktops and ``xvfb-run`` (:99)."""
X11_SOCKETS = Path("/tmp/.X11-unix")


class DisplayError(RuntimeError):
    """No display to run sumo-gui on, and none could be started; the message is one line."""


def xvfb_binary() -> str | None:
    """Path of the ``Xvfb`` executable, or None where it is not installed."""
    return shutil.which("Xvfb")


def available() -> bool:
    """Whether sumo-gui can get a display: ``$DISPLAY`` is set, or Xvfb can start one."""
    return bool(os.environ.get("DISPLAY")) or xvfb_binary() is not None


def _in_use(number: int) -> bool:
    return (X11_SOCKETS / f"X{number}").exists() or Path(f"/tmp/.X{number}-lock").exists()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # Xvfb removes its socket and lock file on SIGTERM
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _start_xvfb(xvfb: str, timeout_s: float) -> tuple[subprocess.Popen[bytes], str]:
    """Start Xvfb on the first free display number; return it once its socket exists."""
    last_error = ""
    for number in range(FIRST_DISPLAY, FIRST_DISPLAY + 100):
        if _in_use(number):
            continue
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen(
                dying_with_this_process(
                    [xvfb, f":{number}", "-screen", "0", SCREEN, "-nolisten", "tcp"]),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            )
            socket = X11_SOCKETS / f"X{number}"
            deadline = time.monotonic() + timeout_s
            while proc.poll() is None and not socket.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            if proc.poll() is None and socket.exists():
                return proc, f":{number}"
            _stop(proc)
            log.seek(0)
            lines = [line for line in log.read().decode(errors="replace").splitlines() if line]
            last_error = lines[-1].strip() if lines else f"no socket after {timeout_s:.0f} s"
        # another process may have taken the number between the check and the start: go on
    raise DisplayError(f"Xvfb could not start a virtual display ({last_error})")


@contextlib.contextmanager
def display(*, timeout_s: float = 10.0) -> Iterator[str]:
    """Yield the X display sumo-gui should use, starting a virtual one when there is none.

    Args:
        timeout_s: How long to wait for a started Xvfb to accept connections.

    Yields:
        The display name, e.g. ``:0`` or ``:100``; ``$DISPLAY`` holds it inside the block.

    Raises:
        DisplayError: ``$DISPLAY`` is not set and Xvfb is not installed or fails to start.
    """
    current = os.environ.get("DISPLAY")
    if current:
        yield current
        return
    xvfb = xvfb_binary()
    if xvfb is None:
        raise DisplayError(
            "no display for sumo-gui: $DISPLAY is not set and Xvfb is not installed "
            "(apt-get install xvfb)"
        )
    proc, name = _start_xvfb(xvfb, timeout_s)
    os.environ["DISPLAY"] = name
    try:
        yield name
    finally:
        os.environ.pop("DISPLAY", None)
        _stop(proc)
