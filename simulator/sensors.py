"""Roadside sensors: SUMO lane-area (E2) detectors on the controlled lanes.

Each controlled incoming lane gets an entry detector that ends at the stop
line; each outgoing lane gets an exit detector that starts where the lane
does. A detector covers its whole lane and at least ``MIN_DETECTOR_M``
metres: on the short lanes of junction clusters SUMO extends it upstream
(entry) or downstream (exit) over the neighbouring lanes, as a camera
would see the queue that reaches back past a short lane. The detectors are
written to an additional file made from the net, so a user never writes
one. They are read after every decision step.

A :class:`SensorModel` sits between the detectors and the observation: the
default passes readings through; fault models (noise, dropout, latency)
replace it without touching anything else.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np
from traci import constants as tc

from networks import NetInfo
from networks.files import write_text

HALTING = tc.LAST_STEP_VEHICLE_HALTING_NUMBER
OCCUPANCY = tc.LAST_STEP_OCCUPANCY
MEAN_SPEED = tc.LAST_STEP_MEAN_SPEED
VEHICLE_COUNT = tc.LAST_STEP_VEHICLE_NUMBER
VEHICLE_IDS = tc.LAST_STEP_VEHICLE_ID_LIST


MIN_DETECTOR_M = 50.0
"""Shortest detector: shorter lanes are extended over their neighbours."""


@dataclass(frozen=True)
class Readings:
    """One reading of every detector, as arrays indexed like :attr:`Detectors.ids`."""

    time: float
    """Simulated time of the reading in seconds."""
    queue: np.ndarray
    """Halting vehicles on the detector (SUMO's detector rule: below 1.39 m/s for 1 s)."""
    occupancy: np.ndarray
    """Share of the detector's length occupied by vehicles, in percent."""
    speed: np.ndarray
    """Mean speed of the vehicles on the detector in m/s; NaN when it is empty."""
    count: np.ndarray
    """Vehicles on the detector (exit detectors report only this; their other fields are NaN)."""
    first_wait: np.ndarray
    """Waiting time in seconds of the vehicle nearest the stop line (0 when empty)."""

    def with_values(self, **arrays: Any) -> Readings:
        """A copy with some arrays replaced (for sensor models)."""
        return replace(self, **arrays)

    FIELDS = 5
    """Arrays per reading, each with one value per detector (see :meth:`pack`)."""

    def pack(self) -> np.ndarray:
        """The reading as one float array: the time, then each field in turn.

        Far cheaper to send between processes than a pickled reading (one
        buffer instead of five arrays); :meth:`unpack` reverses it.
        """
        return np.concatenate(
            ([self.time], self.queue, self.occupancy, self.speed, self.count, self.first_wait)
        )

    @classmethod
    def unpack(cls, flat: np.ndarray) -> Readings:
        """The reading :meth:`pack` made; its arrays are views of ``flat``."""
        fields = flat[1:].reshape(cls.FIELDS, -1)
        return cls(float(flat[0]), *fields)


@dataclass(frozen=True)
class Detectors:
    """The lane-area detectors of a network and where they sit."""

    ids: tuple[str, ...]
    lanes: tuple[str, ...]
    lengths: np.ndarray
    speed_limits: np.ndarray
    is_entry: np.ndarray

    def index(self) -> dict[tuple[str, bool], int]:
        """Map (lane, is entry detector) to the detector's index."""
        return {(lane, bool(e)): i for i, (lane, e) in enumerate(zip(self.lanes, self.is_entry))}


def build_detectors(
    net: NetInfo, tls_ids: list[str], length: float | None = None, *, exits: bool = True
) -> Detectors:
    """One entry detector per controlled incoming lane and (``exits``) one per outgoing lane.

    ``length`` caps a detector's length in metres; ``None`` covers the whole
    lane (and at least :data:`MIN_DETECTOR_M`).
    Each detector costs SUMO time at every simulated second, so exit
    detectors are only placed where something reads them.
    """
    ids, lanes, lengths, limits, entry = [], [], [], [], []
    seen: set[tuple[str, bool]] = set()
    # every entry detector first, then the exits: each group is read in one sweep
    sides = [(net.incoming_lanes(tls), True) for tls in tls_ids]
    if exits:
        sides += [(net.outgoing_lanes(tls), False) for tls in tls_ids]
    for lanes_of, is_entry in sides:
        for lane in lanes_of:
            if (lane, is_entry) in seen:
                continue
            seen.add((lane, is_entry))
            info = net.lanes[lane]
            ids.append(f"gp_{'in' if is_entry else 'out'}_{lane}")
            lanes.append(lane)
            covered = max(info.length, MIN_DETECTOR_M)
            lengths.append(covered if length is None else min(covered, length))
            limits.append(max(info.speed, 0.1))
            entry.append(is_entry)
    return Detectors(
        tuple(ids), tuple(lanes), np.array(lengths), np.array(limits), np.array(entry, dtype=bool)
    )


def write_detectors(detectors: Detectors, net: NetInfo, folder: Path) -> Path:
    """Write the detectors as a SUMO additional file in ``folder``; return its path."""
    rows = []
    for det, lane, length, is_entry in zip(
        detectors.ids, detectors.lanes, detectors.lengths, detectors.is_entry
    ):
        # entry: ends at the stop line; exit: starts at the lane's start. SUMO
        # continues a detector longer than its lane over the adjacent lanes.
        place = f'endPos="{net.lanes[lane].length:.2f}"' if is_entry else 'pos="0"'
        rows.append(
            f"    <laneAreaDetector id={quoteattr(det)} lane={quoteattr(lane)} "
            f'{place} length="{length:.2f}" freq="86400" file="NUL" friendlyPos="true"/>'
        )
    text = "<additional>\n" + "\n".join(rows) + "\n</additional>\n"
    return write_text(folder / "detectors.add.xml", text)


class DetectorReader:
    """Reads every detector after a decision step.

    libsumo answers a direct call in about 0.15 us, faster than building
    subscription results, so it is read call by call; over TraCI's socket
    each call costs tens of microseconds, so there one subscription per
    detector brings everything in one exchange.
    """

    _VARS = (HALTING, OCCUPANCY, MEAN_SPEED, VEHICLE_COUNT)

    def __init__(self, detectors: Detectors, *, first_wait: bool = False) -> None:
        self.detectors = detectors
        self.first_wait = first_wait
        self._entry = np.flatnonzero(detectors.is_entry)
        self._n_entry = len(self._entry)
        if not (self._entry == np.arange(self._n_entry)).all():
            raise ValueError("entry detectors must come before exit detectors")
        self._subscribed = False

    def subscribe(self, conn: Any, *, direct: bool) -> None:
        """Prepare to read a freshly started simulation (``direct``: call by call)."""
        self._subscribed = not direct
        if direct:
            return
        variables = self._VARS + ((VEHICLE_IDS,) if self.first_wait else ())
        for i, det in enumerate(self.detectors.ids):
            conn.lanearea.subscribe(det, variables if i < self._n_entry else (VEHICLE_COUNT,))

    @staticmethod
    def _getters(conn: Any) -> tuple[Any, Any, Any, Any]:
        # libsumo's SWIG functions, without the thin Python wrapper around each
        raw = getattr(conn, "_libsumo", None)
        if raw is not None and hasattr(raw, "lanearea_getLastStepHaltingNumber"):
            return (
                raw.lanearea_getLastStepHaltingNumber,
                raw.lanearea_getLastStepOccupancy,
                raw.lanearea_getLastStepMeanSpeed,
                raw.lanearea_getLastStepVehicleNumber,
            )
        la = conn.lanearea
        return (
            la.getLastStepHaltingNumber,
            la.getLastStepOccupancy,
            la.getLastStepMeanSpeed,
            la.getLastStepVehicleNumber,
        )

    def read(self, conn: Any, time: float) -> Readings:
        """The detectors' values after the last simulation step."""
        ids = self.detectors.ids
        n, m = len(ids), self._n_entry
        entries = ids[:m]
        # one flat array: queue, occupancy, speed (entries; NaN-padded for exits), count
        table = np.full(4 * n, np.nan)
        if self._subscribed:
            results = conn.lanearea.getAllSubscriptionResults()
            for k, var in enumerate(self._VARS[:3]):
                table[k * n : k * n + m] = [results[d][var] for d in entries]
            table[3 * n :] = [results[d][VEHICLE_COUNT] for d in ids]
        else:
            halting, occupied, mean_speed, number = self._getters(conn)
            for k, get in enumerate((halting, occupied, mean_speed)):
                table[k * n : k * n + m] = np.fromiter(map(get, entries), float, m)
            table[3 * n :] = np.fromiter(map(number, ids), float, n)
        queue, occupancy, speed, count = table.reshape(4, n)
        speed[(speed < 0) | (count == 0)] = np.nan  # -1 when empty, 0 before the first step
        np.minimum(queue, count, out=queue)  # E2 also counts a slow car that left in the step
        first_wait = np.zeros(n)
        if self.first_wait:
            for i in self._entry:
                if self._subscribed:
                    vehicles = results[ids[i]][VEHICLE_IDS]
                else:
                    vehicles = conn.lanearea.getLastStepVehicleIDs(ids[i])
                if vehicles:
                    lead = max(vehicles, key=conn.vehicle.getLanePosition)
                    first_wait[i] = conn.vehicle.getWaitingTime(lead)
        return Readings(time, queue, occupancy, speed, count, first_wait)


class SensorModel:
    """How detector readings reach the controller. This one passes them through unchanged.

    Subclasses model faulty devices (noise, dropout, stuck-at, latency) by
    overriding :meth:`observe`; :meth:`reset` is called with the episode's seed.
    """

    def reset(self, detectors: Detectors, seed: int | None) -> None:
        """Start an episode."""

    def observe(self, readings: Readings) -> Readings:
        """The readings as the controller receives them."""
        return readings

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
