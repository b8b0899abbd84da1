"""The one place that finds SUMO's installation, when it is needed and never at import.

The simulator (:mod:`simulator.sumo`) and the grid generator both find SUMO here.
"""

from __future__ import annotations

import os
from pathlib import Path


class SumoError(RuntimeError):
    """SUMO is missing, broken, or refused to start; the message is one line."""


def sumo_home() -> Path:
    """SUMO's installation folder, from the ``eclipse-sumo`` wheel or ``$SUMO_HOME``.

    Raises:
        SumoError: neither gives a folder with SUMO's ``bin/`` in it.
    """
    try:
        import sumo  # the eclipse-sumo wheel

        home = Path(sumo.SUMO_HOME)
    except (ImportError, AttributeError):
        env = os.environ.get("SUMO_HOME")
        if not env:
            raise SumoError(
                "SUMO not found: pip install eclipse-sumo libsumo, or set SUMO_HOME"
            ) from None
        home = Path(env)
    if not (home / "bin").is_dir():
        raise SumoError(f"SUMO_HOME {home} has no bin/ folder: a broken SUMO installation")
    # SUMO's tools and its XML validation read the variable
    os.environ.setdefault("SUMO_HOME", str(home))
    return home
