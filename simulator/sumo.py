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

__all__ = ["Backend", "SumoError", "start", "sumo_binary", "sumo_home"]

Backend = Literal["libsumo", "traci"]


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
            traci.start(cmd, label=label)
        except (traci.exceptions.FatalTraCIError, traci.exceptions.TraCIException) as err:
            raise SumoError(f"SUMO refused to start: {err}") from None
        return traci.getConnection(label)
    raise SumoError(f"unknown SUMO backend {backend!r}: use 'libsumo' or 'traci'")
