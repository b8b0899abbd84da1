"""The road graph a drift needs: which edges exist, which lead where, and closures for SUMO.

Read once per net file with a streaming parser, like :mod:`networks.netinfo`: the
normal (non-internal) edges and the connections between them. A closure is written
as a SUMO rerouter additional (``<rerouter>`` with ``<closingReroute disallow="all">``,
https://sumo.dlr.de/docs/Simulation/Rerouter.html): the closed edge's lanes allow no
vehicle for the interval, and a vehicle whose route uses the closed edge is rerouted
as it enters any edge of the rerouter, which lists every edge of the net, so no
vehicle reaches the closure unwarned. A trip routed at insertion is routed around it.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

from networks.errors import NetworkError
from networks.files import write_text


@dataclass(frozen=True)
class RoadGraph:
    """The normal edges of a net and where each leads."""

    edges: tuple[str, ...]
    """Every normal edge, in file order."""
    successors: dict[str, tuple[str, ...]]
    """The edges a vehicle may turn into from each edge."""
    turnarounds: frozenset[tuple[str, str]] = frozenset()
    """The (edge, edge) turns that are U-turns onto the same road (SUMO's ``dir="t"``)."""

    def entered_from(self, edge: str) -> tuple[str, ...]:
        """The edges that lead into ``edge``, but for a U-turn from its own road."""
        return tuple(p for p in self.predecessors.get(edge, ())
                     if (p, edge) not in self.turnarounds)

    def left_to(self, edge: str) -> tuple[str, ...]:
        """The edges ``edge`` leads into, but for a U-turn onto its own road."""
        return tuple(s for s in self.successors.get(edge, ())
                     if (edge, s) not in self.turnarounds)

    @functools.cached_property
    def predecessors(self) -> dict[str, tuple[str, ...]]:
        """The edges that lead into each edge."""
        into: dict[str, list[str]] = {e: [] for e in self.edges}
        for edge, nexts in self.successors.items():
            for nxt in nexts:
                into.setdefault(nxt, []).append(edge)
        return {e: tuple(p) for e, p in into.items()}

    def reachable(self, origin: str, closed: Iterable[str] = ()) -> set[str]:
        """The edges a vehicle on ``origin`` can reach without entering ``closed``."""
        shut = set(closed)
        seen, todo = {origin}, deque([origin])
        while todo:
            for nxt in self.successors.get(todo.popleft(), ()):
                if nxt not in seen and nxt not in shut:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    def sample(self, count: int = 5) -> str:
        """A few of the edge ids, for a message that names a missing one."""
        shown = ", ".join(self.edges[:count])
        return f"{shown}, ... ({len(self.edges)} edges)" if len(self.edges) > count else shown


@functools.lru_cache(maxsize=8)
def _read(path: Path, mtime_ns: int) -> RoadGraph:
    del mtime_ns  # part of the cache key only
    edges: list[str] = []
    successors: dict[str, list[str]] = {}
    turnarounds: set[tuple[str, str]] = set()
    try:
        for _, elem in ET.iterparse(path, events=("end",)):
            if elem.tag == "edge":
                if elem.get("function") != "internal":
                    edges.append(elem.get("id", ""))
                elem.clear()
            elif elem.tag == "connection":
                source, target = elem.get("from", ""), elem.get("to", "")
                if not source.startswith(":") and not target.startswith(":"):
                    nexts = successors.setdefault(source, [])
                    if target not in nexts:
                        nexts.append(target)
                    if elem.get("dir") == "t":
                        turnarounds.add((source, target))
                elem.clear()
    except ET.ParseError as err:
        raise NetworkError(f"{path}: malformed net file ({err})") from None
    return RoadGraph(tuple(edges), {e: tuple(n) for e, n in successors.items()},
                     frozenset(turnarounds))


def road_graph(net_file: str | Path) -> RoadGraph:
    """The road graph of a net file, read once per version of the file.

    Raises:
        NetworkError: The file is missing or malformed.
    """
    path = Path(net_file).resolve()
    if not path.is_file():
        raise NetworkError(f"net file not found: {path}")
    return _read(path, path.stat().st_mtime_ns)


@dataclass(frozen=True)
class Closing:
    """One edge closed to all vehicles from ``begin`` to ``end`` (absolute seconds)."""

    edge: str
    begin: float
    end: float


def write_rerouter(path: Path, graph: RoadGraph, closings: Sequence[Closing]) -> Path:
    """The SUMO additional that closes ``closings``, with a rerouter on every edge."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<additional>"]
    for number, closing in enumerate(closings):
        lines += [
            f'    <rerouter id="greenphase-closure-{number}" '
            f'edges={quoteattr(" ".join(graph.edges))}>',
            f'        <interval begin="{closing.begin:.2f}" end="{closing.end:.2f}">',
            f'            <closingReroute id={quoteattr(closing.edge)} disallow="all"/>',
            "        </interval>",
            "    </rerouter>",
        ]
    lines.append("</additional>\n")
    return write_text(path, "\n".join(lines))
