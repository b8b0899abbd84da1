"""Vehicles per controlled movement: a scenario's demand routed by SUMO's duarouter, cached.

Webster's timing (:mod:`simulator.programs`) sizes each green for the flows these
counts give. SUMO is located when a count is needed, never at import.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from networks.errors import NetworkError
from networks.files import write_text
from networks.netinfo import NetInfo
from networks.scenario import Scenario

DUAROUTER_SEED = 42
"""Random seed given to duarouter, so that routing (and its cache) is reproducible."""
_CACHE_FORMAT = 1


def _sumo_binary(name: str) -> str:
    """Path of a SUMO executable, located now (see :func:`simulator.sumo.sumo_binary`)."""
    from simulator.sumo import SumoError, sumo_binary

    try:
        return sumo_binary(name)
    except SumoError as err:
        raise NetworkError(str(err)) from None


def cache_dir() -> Path:
    """Folder of the cached demand counts: ``$GREENPHASE_CACHE/webster`` or ``~/.cache/...``."""
    base = os.environ.get("GREENPHASE_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "greenphase"
    return root / "webster"


def routed_demand_key(scenario: Scenario, cache_format: int) -> dict[str, Any]:
    """What decides a scenario's routed demand: its files, horizon and duarouter's seed."""
    return {
        "format": cache_format,
        "net": _file_key(Path(scenario.net_file).resolve()),
        "routes": [_file_key(Path(r).resolve()) for r in scenario.route_files],
        "begin": scenario.begin,
        "end": scenario.end,
        "seed": DUAROUTER_SEED,
    }


def cache_name(scenario: Scenario, key: dict[str, Any]) -> str:
    """A cache file's name for ``key``: the net's name and a digest of the key."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    stem = Path(scenario.net_file).name.removesuffix(".xml").removesuffix(".net")
    return f"{stem}-{digest}.json"


def read_cached(cache_file: Path, key: dict[str, Any], field: str) -> Any:
    """The ``field`` of a cache file written for ``key``; None when missing, stale or torn."""
    try:
        cached = json.loads(cache_file.read_text())
        if cached.get("key") == key:
            return cached[field]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # no cache yet, or unreadable: compute again
    return None


def _file_key(path: Path) -> list[str | int]:
    try:
        stat = path.stat()
    except OSError:
        raise NetworkError(f"file not found: {path}") from None
    return [str(path), stat.st_mtime_ns, stat.st_size]


def _edge_of(net: NetInfo, lane_id: str) -> str | None:
    lane = net.lanes.get(lane_id)
    return lane.edge if lane is not None else None


def _movements(net: NetInfo) -> set[tuple[str, str]]:
    """(in-edge, out-edge) pairs of every controlled link between normal edges."""
    pairs = set()
    for tls_id in net.tls_ids:
        for link in net.links[tls_id]:
            src, dst = _edge_of(net, link.in_lane), _edge_of(net, link.out_lane)
            if src is not None and dst is not None:
                pairs.add((src, dst))
    return pairs


def _routed_vehicles(path: Path, begin: float, end: float) -> Iterable[list[str]]:
    """Edge lists of the vehicles in a duarouter output that depart within [begin, end)."""
    named: dict[str, list[str]] = {}
    depart: float | None = None
    ref: str | None = None
    edges: list[str] | None = None
    in_vehicle = False
    for event, elem in ET.iterparse(path, events=("start", "end")):
        tag = elem.tag
        if event == "start":
            if tag == "vehicle":
                in_vehicle, ref, edges = True, elem.get("route"), None
                try:
                    depart = float(elem.get("depart", ""))
                except ValueError:  # "triggered" and the like: no fixed departure
                    depart = None
            continue
        if tag == "route":
            route = (elem.get("edges") or "").split()
            if in_vehicle:
                if edges is None:
                    edges = route
            elif elem.get("id"):
                named[elem.get("id", "")] = route
        elif tag == "vehicle":
            in_vehicle = False
            if edges is None and ref is not None:
                edges = named.get(ref)
            if edges and depart is not None and begin <= depart < end:
                yield edges
            elem.clear()


def _route_and_count(scenario: Scenario, pairs: set[tuple[str, str]]) -> tuple[dict[str, int], int]:
    """Run duarouter on the scenario and count vehicles per controlled (in-edge, out-edge)."""
    duarouter = _sumo_binary("duarouter")
    with tempfile.TemporaryDirectory(prefix="greenphase-dua-") as tmp:
        out = Path(tmp) / "routes.rou.xml"
        cmd = [
            duarouter,
            "--net-file", str(scenario.net_file),
            "--route-files", ",".join(str(r) for r in scenario.route_files),
            "--begin", str(scenario.begin),
            "--end", str(scenario.end),
            "--ignore-errors",
            "--seed", str(DUAROUTER_SEED),
            "--output-file", str(out),
            "--alternatives-output", str(Path(tmp) / "routes.alt.xml"),
            "--no-step-log",
            "--no-warnings",
        ]  # fmt: skip
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise NetworkError(f"duarouter failed on {scenario.name}: {err}") from None
        if done.returncode != 0 or not out.is_file():
            raise NetworkError(
                f"duarouter failed on {scenario.name} (exit {done.returncode}): "
                f"{_first_error(done.stderr)}"
            )
        counts: dict[str, int] = defaultdict(int)
        vehicles = 0
        try:
            for edges in _routed_vehicles(out, scenario.begin, scenario.end):
                vehicles += 1
                for pair in zip(edges, edges[1:], strict=False):
                    if pair in pairs:
                        counts[f"{pair[0]} {pair[1]}"] += 1
        except ET.ParseError as err:
            raise NetworkError(
                f"duarouter wrote unreadable routes for {scenario.name}: {err}"
            ) from None
    return dict(counts), vehicles


def _first_error(stderr: str) -> str:
    """SUMO's first ``Error:`` message with its indented context lines, on one line."""
    lines = stderr.splitlines()
    for n, line in enumerate(lines):
        if line.startswith("Error:"):
            parts = [line.removeprefix("Error:").strip()]
            for more in lines[n + 1 :]:
                if not more.startswith(" ") or not more.strip():
                    break
                parts.append(more.strip())
            return "; ".join(parts)
    rest = [ln.strip() for ln in lines if ln.strip()]
    return rest[-1] if rest else "no message"


def movement_counts(scenario: Scenario) -> dict[tuple[str, str], int]:
    """Vehicles per controlled movement (in-edge, out-edge) departing within [begin, end).

    The demand is routed with SUMO's ``duarouter`` (RESCO route files hold trips
    without routes), then every routed vehicle counts once on each consecutive
    pair of its route's edges that a traffic light controls. The result is
    cached in :func:`cache_dir`, keyed by the net and route files (path, size
    and modification time), ``begin`` and ``end``; the cache file is written to
    a temporary name and moved into place.

    Args:
        scenario: The network, its demand and its time window.

    Returns:
        Vehicle counts by (in-edge id, out-edge id); movements nobody uses are left out.

    Raises:
        NetworkError: If SUMO's duarouter is missing or fails.
    """
    net = scenario.net
    key = routed_demand_key(scenario, _CACHE_FORMAT)
    cache_file = cache_dir() / cache_name(scenario, key)
    cached = read_cached(cache_file, key, "counts")
    if cached is not None:
        return {_pair(k): int(v) for k, v in cached.items()}
    started = time.perf_counter()
    counts, vehicles = _route_and_count(scenario, _movements(net))
    record = {
        "key": key,
        "vehicles": vehicles,
        "duarouter_s": round(time.perf_counter() - started, 3),
        "counts": counts,
    }
    try:
        write_text(cache_file, json.dumps(record, sort_keys=True))
    except OSError:
        pass  # a read-only cache only costs the next call another duarouter run
    return {_pair(k): v for k, v in counts.items()}


def _pair(key: str) -> tuple[str, str]:
    src, _, dst = key.partition(" ")
    return src, dst


def link_flows(
    net: NetInfo, counts: Mapping[tuple[str, str], float], horizon_s: float
) -> dict[str, tuple[float, ...]]:
    """Hourly flow on every controlled link, from the vehicle count of each movement.

    A movement's count is split equally over the incoming lanes that have a
    link for it, and a lane's share equally over its links for it.

    Args:
        net: The network.
        counts: Vehicles per (in-edge, out-edge) within the horizon (:func:`movement_counts`).
        horizon_s: Length of the counted window, in seconds.

    Returns:
        By signal id, the flow in veh/h of each link of ``net.links[tls_id]``, in that order.
    """
    scale = 3600.0 / horizon_s
    flows: dict[str, tuple[float, ...]] = {}
    for tls_id in net.tls_ids:
        links = net.links[tls_id]
        by_movement: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for pos, link in enumerate(links):
            src, dst = _edge_of(net, link.in_lane), _edge_of(net, link.out_lane)
            if src is not None and dst is not None:
                by_movement[(src, dst)][link.in_lane].append(pos)
        values = [0.0] * len(links)
        for movement, lanes in by_movement.items():
            count = counts.get(movement, 0)
            if not count:
                continue
            for positions in lanes.values():
                for pos in positions:
                    values[pos] += count * scale / len(lanes) / len(positions)
        flows[tls_id] = tuple(values)
    return flows
