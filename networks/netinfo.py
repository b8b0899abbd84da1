"""What the simulator needs to know of a SUMO network, read from its net file.

The net file is read once with a streaming XML parser (no SUMO process, no
sumolib object graph): traffic-light programs, the connections each signal
controls, and the lanes' lengths and speed limits.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from networks.errors import NetworkError


@dataclass(frozen=True)
class Phase:
    """One phase of a signal program: its duration and its signal state string."""

    duration: float
    state: str
    min_dur: float | None = None
    max_dur: float | None = None

    @property
    def is_green(self) -> bool:
        """A phase that gives right of way to some movement and has no yellow."""
        return any(c in "Gg" for c in self.state) and not any(c in "yYu" for c in self.state)

    @property
    def is_yellow(self) -> bool:
        """A clearance phase: some movement shows yellow."""
        return any(c in "yY" for c in self.state)

    @property
    def is_all_red(self) -> bool:
        """A phase in which nothing may go."""
        return not any(c in "GgyYuOo" for c in self.state)


@dataclass(frozen=True)
class Program:
    """A traffic-light program (SUMO's ``tlLogic``)."""

    tls_id: str
    program_id: str
    kind: str
    offset: float
    phases: tuple[Phase, ...]


@dataclass(frozen=True)
class Link:
    """One controlled movement: an incoming lane to an outgoing lane, with its link index."""

    index: int
    in_lane: str
    out_lane: str
    direction: str


@dataclass(frozen=True)
class Lane:
    """A lane of a normal (non-internal) edge."""

    id: str
    edge: str
    length: float
    speed: float


@dataclass(frozen=True)
class NetInfo:
    """Signals, programs, controlled movements and lanes of one net file."""

    path: Path
    programs: dict[str, Program]
    links: dict[str, tuple[Link, ...]]
    lanes: dict[str, Lane]

    @property
    def tls_ids(self) -> list[str]:
        """Traffic lights that have both a program and controlled movements, sorted."""
        return sorted(t for t in self.programs if self.links.get(t))

    def incoming_lanes(self, tls_id: str) -> list[str]:
        """Controlled incoming lanes of one signal, in link order, without repeats."""
        return list(dict.fromkeys(link.in_lane for link in self.links[tls_id]))

    def outgoing_lanes(self, tls_id: str) -> list[str]:
        """Outgoing lanes of one signal's controlled movements, without repeats."""
        return list(dict.fromkeys(link.out_lane for link in self.links[tls_id]))

    @property
    def controlled_lanes(self) -> list[str]:
        """All controlled incoming lanes of the network, without repeats."""
        return list(dict.fromkeys(lane for t in self.tls_ids for lane in self.incoming_lanes(t)))


def _float(value: str | None) -> float | None:
    return None if value is None else float(value)


@functools.lru_cache(maxsize=32)
def _read(path: Path, mtime: float) -> NetInfo:
    del mtime  # part of the cache key only: a rewritten file is read again
    programs: dict[str, Program] = {}
    links: dict[str, list[Link]] = {}
    lanes: dict[str, Lane] = {}
    edge_id = ""
    internal = False
    seen_root = False
    try:
        for event, elem in ET.iterparse(path, events=("start", "end")):
            if not seen_root:
                seen_root = True
                if elem.tag != "net":
                    raise NetworkError(f"{path}: not a SUMO net file (root element <{elem.tag}>)")
            if event == "start":
                if elem.tag == "edge":
                    edge_id = elem.get("id", "")
                    internal = elem.get("function") == "internal"
                elif elem.tag == "lane" and not internal:
                    lane_id = elem.get("id", "")
                    lanes[lane_id] = Lane(
                        lane_id, edge_id, float(elem.get("length", 0)), float(elem.get("speed", 0))
                    )
                continue
            if elem.tag == "tlLogic":
                phases = tuple(
                    Phase(
                        float(p.get("duration", 0)),
                        p.get("state", ""),
                        _float(p.get("minDur")),
                        _float(p.get("maxDur")),
                    )
                    for p in elem.iter("phase")
                )
                tls_id = elem.get("id", "")
                # the first program listed for a signal is the one SUMO starts with
                programs.setdefault(
                    tls_id,
                    Program(
                        tls_id,
                        elem.get("programID", "0"),
                        elem.get("type", "static"),
                        float(elem.get("offset", 0)),
                        phases,
                    ),
                )
                elem.clear()
            elif elem.tag == "connection" and elem.get("tl") is not None:
                tls_id = elem.get("tl", "")
                links.setdefault(tls_id, []).append(
                    Link(
                        int(elem.get("linkIndex", -1)),
                        f"{elem.get('from')}_{elem.get('fromLane')}",
                        f"{elem.get('to')}_{elem.get('toLane')}",
                        elem.get("dir", ""),
                    )
                )
            elif elem.tag == "edge":
                internal = False
                elem.clear()
    except ET.ParseError as err:
        raise NetworkError(f"{path}: malformed net file ({err})") from None
    except (TypeError, ValueError) as err:
        if isinstance(err, NetworkError):
            raise
        raise NetworkError(f"{path}: malformed net file ({err})") from None
    if not seen_root:
        raise NetworkError(f"{path}: empty net file")
    return NetInfo(
        path,
        programs,
        {t: tuple(sorted(ls, key=lambda link: link.index)) for t, ls in links.items()},
        lanes,
    )


def read_net(path: str | Path) -> NetInfo:
    """Read a net file; raise :class:`NetworkError` if it is missing or malformed."""
    path = Path(path).resolve()
    if not path.is_file():
        raise NetworkError(f"net file not found: {path}")
    return _read(path, path.stat().st_mtime)
