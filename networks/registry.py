"""The registry of named scenarios: a net, its demand, and the simulated horizon.

The RESCO benchmark networks ship inside the ``sumo-rl`` package and are used
from there with RESCO's horizons (Ault and Sharon, "Reinforcement Learning
Benchmarks for Traffic Signal Control", NeurIPS Datasets and Benchmarks 2021).
"""

from __future__ import annotations

import importlib.util
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from networks.demand import vehicles_due
from networks.errors import NetworkError
from networks.generators import grid
from networks.netinfo import read_net
from networks.scenario import Scenario

__all__ = ["DEFAULT_NETWORK", "Scenario", "describe", "from_files", "get", "names", "route_edges"]


def _sumo_rl_nets() -> Path:
    # located without importing sumo_rl, whose import fails unless SUMO_HOME is set
    spec = importlib.util.find_spec("sumo_rl")
    if spec is None or not spec.submodule_search_locations:
        raise NetworkError("the sumo-rl package is not installed: pip install sumo-rl")
    return Path(next(iter(spec.submodule_search_locations))) / "nets"


# name: (folder under nets/, net file, route file, begin, end, description)
_BUILTIN: dict[str, tuple[str, str, str, int, int, str]] = {
    "cologne1": ("RESCO/cologne1", "cologne1.net.xml", "cologne1.rou.xml", 25200, 28800,
                 "Cologne, one intersection (RESCO)"),
    "cologne3": ("RESCO/cologne3", "cologne3.net.xml", "cologne3.rou.xml", 25200, 28800,
                 "Cologne, three intersections (RESCO)"),
    "cologne8": ("RESCO/cologne8", "cologne8.net.xml", "cologne8.rou.xml", 25200, 28800,
                 "Cologne, eight intersections (RESCO)"),
    "ingolstadt1": ("RESCO/ingolstadt1", "ingolstadt1.net.xml", "ingolstadt1.rou.xml",
                    57600, 61200, "Ingolstadt, one intersection (RESCO)"),
    "ingolstadt7": ("RESCO/ingolstadt7", "ingolstadt7.net.xml", "ingolstadt7.rou.xml",
                    57600, 61200, "Ingolstadt, seven-signal corridor (RESCO)"),
    "ingolstadt21": ("RESCO/ingolstadt21", "ingolstadt21.net.xml", "ingolstadt21.rou.xml",
                     57600, 61200, "Ingolstadt, 21-signal region (RESCO)"),
    "grid4x4": ("RESCO/grid4x4", "grid4x4.net.xml", "grid4x4_1.rou.xml", 0, 3600,
                "synthetic 4x4 grid (RESCO)"),
    "arterial4x4": ("RESCO/arterial4x4", "arterial4x4.net.xml", "arterial4x4_1.rou.xml", 0, 3600,
                    "synthetic 4x4 arterial grid (RESCO)"),
    "single-intersection": ("single-intersection", "single-intersection.net.xml",
                            "single-intersection.rou.xml", 0, 3600,
                            "one four-arm intersection (sumo-rl)"),
}

DEFAULT_NETWORK = "cologne1"
_GRID = re.compile(r"^grid-(\d+)x(\d+)$")


def names() -> list[str]:
    """Names of the registered scenarios, with the default generated grid."""
    return [*_BUILTIN, "grid-3x3"]


def get(name: str) -> Scenario:
    """Return a registered scenario by name; ``grid-RxC`` is generated (and cached) on demand."""
    if name in _BUILTIN:
        folder, net, routes, begin, end, description = _BUILTIN[name]
        base = _sumo_rl_nets() / folder
        return Scenario(name, base / net, (base / routes,), begin, end, description)
    match = _GRID.match(name)
    if match:
        return grid(int(match.group(1)), int(match.group(2)))
    raise NetworkError(
        f"unknown network {name!r}; known: {', '.join(names())}, or grid-RxC, or --net/--routes"
    )


_ROUTE_ELEMENTS = {"vehicle", "trip", "flow", "route", "routeDistribution", "vType",
                   "vTypeDistribution", "person", "personFlow", "container", "interval",
                   "include", "param", "stop"}


def route_edges(path: Path) -> set[str]:
    """Every edge a route file names (routes, trips' from/to/via); checks it is a route file."""
    edges: set[str] = set()
    try:
        for _, elem in ET.iterparse(path, events=("start",)):
            if elem.tag in ("routes", "additional"):
                continue
            for attr in ("edges", "from", "to", "via"):
                value = elem.get(attr)
                if value and elem.tag in ("route", "trip", "flow", "vehicle"):
                    edges.update(value.split())
    except ET.ParseError as err:
        raise NetworkError(f"{path}: malformed route file ({err})") from None
    return edges


def from_files(
    net_file: str | Path,
    route_files: str | Path | Sequence[str | Path],
    begin: int | None = None,
    end: int | None = None,
) -> Scenario:
    """A scenario from a user's files, checked: the net parses and the demand runs on it."""
    net_path = Path(net_file).resolve()
    if isinstance(route_files, (str, Path)):
        route_files = [route_files]
    routes = tuple(Path(r).resolve() for r in route_files)
    if not routes:
        raise NetworkError("no route file given: --routes FILE is required with --net")
    info = read_net(net_path)
    if not info.tls_ids:
        raise NetworkError(f"{net_path}: the network has no traffic lights to control")
    known = {lane.edge for lane in info.lanes.values()}
    for route in routes:
        if not route.is_file():
            raise NetworkError(f"route file not found: {route}")
        missing = sorted(route_edges(route) - known)
        if missing:
            raise NetworkError(
                f"{route}: route file does not match net {net_path.name}: "
                f"{len(missing)} unknown edge(s), e.g. {missing[0]!r}"
            )
    begin = 0 if begin is None else int(begin)
    end = begin + 3600 if end is None else int(end)
    name = net_path.name.removesuffix(".xml").removesuffix(".net")
    return Scenario(name, net_path, routes, begin, end, f"user network {net_path.name}")


def describe(scenario: Scenario) -> dict[str, object]:
    """One row of ``networks list``."""
    net = scenario.net
    return {
        "name": scenario.name,
        "signals": len(net.tls_ids),
        "controlled_lanes": len(net.controlled_lanes),
        "vehicles": vehicles_due(scenario),
        "begin_s": scenario.begin,
        "end_s": scenario.end,
        "description": scenario.description,
    }
