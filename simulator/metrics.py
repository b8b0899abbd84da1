"""Trip metrics from SUMO's tripinfo output, defined so that no controller can hide delay.

A vehicle's delay is ``timeLoss + departDelay``. It counts for vehicles that
arrived, for vehicles still running at the end (SUMO's
``--tripinfo-output.write-unfinished``), and for vehicles due to depart within
the horizon that were never inserted (``--tripinfo-output.write-undeparted``:
SUMO writes their ``departDelay`` as the time from their scheduled departure
to the end). A controller that keeps cars out of the network is charged for
every second they wait outside it.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TRIPINFO_OPTIONS = (
    "--tripinfo-output.write-unfinished",
    "true",
    "--tripinfo-output.write-undeparted",
    "true",
)
"""SUMO options that make the tripinfo output cover every vehicle due in the horizon."""

KPI_NAMES = (
    "mean_delay_s",
    "mean_travel_time_s",
    "mean_waiting_time_s",
    "throughput_veh_h",
    "mean_queue_veh",
    "vehicles",
    "unfinished",
    "not_inserted",
)


_COLUMNS = [
    "vehicle", "depart_s", "depart_delay_s", "arrival_s", "duration_s",
    "time_loss_s", "waiting_time_s", "route_length_m",
]
_ATTRIBUTES = ("id", "depart", "departDelay", "arrival", "duration", "timeLoss", "waitingTime",
               "routeLength")
# SUMO writes a tripinfo's attributes in a fixed order; one pattern reads them all in C
_TRIPINFO = re.compile(
    rb'<tripinfo id="([^"]*)" depart="([^"]*)"[^>]*? departDelay="([^"]*)" arrival="([^"]*)"'
    rb'[^>]*? duration="([^"]*)" routeLength="([^"]*)" waitingTime="([^"]*)"'
    rb'[^>]*? timeLoss="([^"]*)"'
)


# the pattern's groups in _COLUMNS order: id, depart, departDelay, arrival, duration,
# timeLoss, waitingTime, routeLength
_FAST_ORDER = [0, 1, 2, 3, 4, 7, 6, 5]


def _rows_fast(data: bytes) -> np.ndarray | None:
    """Rows by pattern, or None when the file is not in SUMO's usual attribute order.

    The rows come as one table of bytes, its columns in ``_COLUMNS`` order.
    """
    rows = _TRIPINFO.findall(data)
    if len(rows) != data.count(b"<tripinfo "):
        return None
    return np.array(rows, dtype=bytes).reshape(-1, len(_COLUMNS))[:, _FAST_ORDER]


def _rows_parsed(path: Path) -> list[tuple[str | None, ...]]:
    """Rows by a full XML parse, whatever the attribute order."""
    rows = []
    for _, elem in ET.iterparse(path, events=("end",)):
        if elem.tag == "tripinfo":
            rows.append(tuple(elem.get(a) for a in _ATTRIBUTES))
            elem.clear()
    return rows


def read_tripinfo(path: str | Path) -> pd.DataFrame:
    """One row per vehicle of a tripinfo file, with its delay and travel time."""
    path = Path(path)
    fast = _rows_fast(path.read_bytes())
    if fast is not None:
        vehicles = fast[:, 0].astype(str)
        numbers = fast[:, 1:].astype(float)
    else:
        parsed = pd.DataFrame(_rows_parsed(path), columns=_COLUMNS)
        vehicles = parsed["vehicle"].to_numpy().astype(str)
        numbers = parsed[_COLUMNS[1:]].astype(float).to_numpy()
    columns = dict(zip(_COLUMNS[1:], numbers.T, strict=True))
    # vehicles loaded ahead of their departure but scheduled after the end are not due
    due = columns["depart_delay_s"] >= 0
    trips = {"vehicle": vehicles[due], **{name: col[due] for name, col in columns.items()}}
    trips["inserted"] = trips["depart_s"] >= 0
    trips["arrived"] = trips["arrival_s"] >= 0
    trips["delay_s"] = trips["time_loss_s"] + trips["depart_delay_s"]
    trips["travel_time_s"] = trips["duration_s"] + trips["depart_delay_s"]
    return pd.DataFrame(trips)


def kpis(
    trips: pd.DataFrame, horizon_s: float, queue: list[float] | np.ndarray
) -> dict[str, float]:
    """The headline figures of one run: means over every vehicle due in the horizon."""
    n = len(trips)
    # no vehicle measured: no mean at all, never a delay of 0 that reads as free flow
    mean = (lambda col: float(trips[col].mean())) if n else (lambda col: math.nan)
    arrived = int(trips["arrived"].sum())
    return {
        "mean_delay_s": mean("delay_s"),
        "mean_travel_time_s": mean("travel_time_s"),
        "mean_waiting_time_s": mean("waiting_time_s"),
        "throughput_veh_h": arrived * 3600.0 / horizon_s,
        "mean_queue_veh": float(np.mean(queue)) if len(queue) else 0.0,
        "vehicles": n,
        "unfinished": int((trips["inserted"] & ~trips["arrived"]).sum()),
        "not_inserted": int((~trips["inserted"]).sum()),
    }


DELAY_BINS = 12
"""Bins of :func:`delay_over_time` over a horizon (each a whole number of minutes)."""


def delay_over_time(trips: pd.DataFrame, begin: float, end: float,
                    bins: int = DELAY_BINS) -> dict[str, Any]:
    """Mean delay of the trips binned by scheduled departure over the horizon.

    A trip's scheduled departure is its departure less its depart delay (for a vehicle
    never inserted, the end less its depart delay, as SUMO charges it to the end).

    Returns:
        ``{"begin": s, "bin_s": s, "bins": [[start_s_from_begin, mean_delay_s, trips], ...]}``
        with empty bins left out.
    """
    horizon = max(float(end - begin), 1.0)
    bin_s = max(60.0, math.ceil(horizon / bins / 60.0) * 60.0)
    if trips.empty:
        return {"begin": begin, "bin_s": bin_s, "bins": []}
    depart = trips["depart_s"].to_numpy(float)
    delay_in = trips["depart_delay_s"].to_numpy(float)
    scheduled = np.where(trips["inserted"].to_numpy(bool), depart, float(end)) - delay_in
    index = np.clip(((scheduled - begin) // bin_s).astype(int), 0, math.ceil(horizon / bin_s) - 1)
    frame = pd.DataFrame({"bin": index, "delay": trips["delay_s"].to_numpy(float)})
    grouped = frame.groupby("bin")["delay"].agg(["mean", "size"])
    return {"begin": begin, "bin_s": bin_s,
            "bins": [[float(b * bin_s), float(m), int(n)]
                     for b, (m, n) in zip(grouped.index, grouped.to_numpy())]}
