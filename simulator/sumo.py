"""Finding SUMO and talking to it: libsumo in process by default, TraCI when asked.

SUMO is located (by :func:`networks.sumo_home.sumo_home`) when a simulation is
started, never at import. libsumo runs the simulation inside this process (about
45x faster than TraCI's socket on cologne8) but holds one simulation per process;
the GUI only speaks TraCI.
"""

from __future__ import annotations

import itertools
import os
import shutil
from typing import Any, Literal

from networks.sumo_home import SumoError, sumo_home
from simulator.processes import dying_with_this_process

__all__ = ["Backend", "ControllerFailed", "SimulationFailed", "SumoError",
           "described", "start", "sumo_binary", "sumo_home"]

Backend = Literal["libsumo", "traci"]


class SimulationFailed(SumoError):
    """A simulation failed while it ran; the message says why, whole, on one line.

    SUMO refused its input part way (a duplicate vehicle id, a trip with no route),
    a controller raised, or the simulation's process died. It is raised in the
    process that asked for the simulation, whichever process ran it (libsumo's own
    exceptions cannot cross between processes), and it pickles.

    Args:
        message: What failed.
        deterministic: Whether running it again would fail the same way (bad input
            found during the run); False for a crash (a killed process, no memory).
    """

    def __init__(self, message: str, *, deterministic: bool = True) -> None:
        super().__init__(message)
        self.deterministic = deterministic

    @classmethod
    def of(cls, err: BaseException, context: str = "") -> SimulationFailed:
        """``err`` as a failure whose message keeps its type and its whole text.

        Args:
            err: The exception where the simulation ran.
            context: What was running, put before the cause (``"SUMO at 150 s"``).
        """
        if isinstance(err, SimulationFailed):
            return err
        # greenphase's own SUMO errors are sentences already; others need their type
        cause = str(err) if isinstance(err, SumoError) else described(err)
        return cls(f"{context}: {cause}" if context else cause,
                   deterministic=not isinstance(err, (MemoryError, OSError)))


class ControllerFailed(SimulationFailed):
    """A controller raised where its simulation ran; the message names it."""


def described(err: BaseException) -> str:
    """An exception as ``Type: message``, its whole message on one line."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def sumo_binary(name: str = "sumo") -> str:
    """Path of a SUMO executable (``sumo``, ``sumo-gui``, ``netgenerate``, ...)."""
    path = sumo_home() / "bin" / name
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    found = shutil.which(name)
    if found:
        return found
    raise SumoError(f"SUMO executable {name!r} not found in {sumo_home() / 'bin'}")


_labels = itertools.count()

def start(args: list[str], backend: Backend = "libsumo", *, gui: bool = False) -> Any:
    """Start a simulation with command-line ``args`` (without the binary).

    Returns an object with SUMO's domains (``simulation``, ``trafficlight``,
    ``lanearea``, ...) and ``close()``: the ``libsumo`` module itself, or a
    TraCI connection.
    """
    if gui and backend != "traci":
        raise SumoError("the SUMO GUI needs backend='traci' (libsumo has no GUI)")
    cmd = [sumo_binary("sumo-gui" if gui else "sumo"), *args]
    if backend == "libsumo":
        os.environ.setdefault("LIBSUMO_AS_TRACI", "quiet")
        try:
            import libsumo
        except ImportError as err:
            raise SumoError(f"libsumo is not importable ({err}): pip install libsumo") from None
        if libsumo.simulation.isLoaded():
            raise SumoError(
                "libsumo already runs a simulation in this process: close the other "
                "environment first, or use backend='traci'"
            )
        try:
            libsumo.start(cmd)
        except libsumo.TraCIException as err:
            raise SumoError(f"SUMO refused to start: {err}") from None
        return libsumo
    if backend == "traci":
        import traci

        label = f"greenphase-{os.getpid()}-{next(_labels)}"
        try:
            traci.start(dying_with_this_process(cmd), label=label)
        except (traci.exceptions.FatalTraCIError, traci.exceptions.TraCIException) as err:
            raise SumoError(f"SUMO refused to start: {err}") from None
        return traci.getConnection(label)
    raise SumoError(f"unknown SUMO backend {backend!r}: use 'libsumo' or 'traci'")
