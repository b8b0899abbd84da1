"""Coordinated fixed timing: Webster's plans with green-wave offsets along the main corridors.

The offsets are SUMO's ``tools/tlsCoordinator.py`` (run as a subprocess): it follows
the routes of the demand from signal to signal, ranks the pairs of consecutive signals
by road priority and vehicles per second of travel, and shifts each signal so that a
platoon leaving one green at ``speed_factor`` times the speed limit arrives at the next
at the start of its green. The demand it reads is the scenario's own route files (its
expected demand), routed by duarouter, never an episode's resampled draw; the offsets
are cached like the Webster flows (:func:`simulator.movements.cache_dir`).

SUMO is located when a function needs it, never at import.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import Field

from networks.errors import NetworkError
from networks.files import write_text
from networks.scenario import Scenario
from simulator.movements import (
    DUAROUTER_SEED,
    _sumo_binary,
    cache_dir,
    cache_name,
    read_cached,
    routed_demand_key,
)
from simulator.programs import SignalPlan, WebsterParams, webster_programs, write_additional

__all__ = ["COORDINATED_PROGRAM_ID", "CoordinatedParams", "coordinated_programs", "offsets"]

COORDINATED_PROGRAM_ID = "greenphase-coordinated"
"""programID of the plans made by :func:`coordinated_programs`."""
_CACHE_FORMAT = 1


class CoordinatedParams(WebsterParams):
    """Settings of coordinated timing (:func:`coordinated_programs`): Webster's and the wave's."""

    common_cycle: bool = True
    """Run every signal on one cycle, the longest of the Webster cycles (at most
    ``max_cycle``), with Webster's splits for it. A green wave holds only between
    signals of equal cycle; False keeps each signal's own Webster cycle."""
    speed_factor: float = Field(default=0.8, gt=0, le=2)
    """tlsCoordinator ``--speed-factor``: platoon speed as a share of the speed limit."""
    ignore_priority: bool = False
    """tlsCoordinator ``--ignore-priority``: rank signal pairs by traffic only, not road
    priority."""


def coordinated_programs(
    scenario: Scenario, params: CoordinatedParams | None = None, *, demand_scale: float = 1.0
) -> dict[str, SignalPlan]:
    """Webster's fixed timing with green-wave offsets from SUMO's tlsCoordinator.

    Cycle and splits are :func:`simulator.programs.webster_programs`' for the Webster
    settings in ``params`` (with ``common_cycle``: for the longest Webster cycle, at most
    ``max_cycle``, forced on every signal); only the offsets change, each within its
    signal's cycle. Signals on no coordinated corridor keep the network's offset.

    Raises:
        NetworkError: If duarouter or tlsCoordinator is missing or fails.
        ValueError: If the Webster settings are inconsistent.
    """
    settings = params if params is not None else CoordinatedParams()
    webster: dict[str, Any] = WebsterParams.model_validate(
        settings.model_dump(include=set(WebsterParams.model_fields))
    ).model_dump()
    webster["demand_scale"] = demand_scale
    plans = webster_programs(scenario, **webster)
    if settings.common_cycle and plans:
        cycle = min(max(p.cycle_s for p in plans.values()), settings.max_cycle)
        plans = webster_programs(scenario, **{**webster, "min_cycle": cycle, "max_cycle": cycle})
    shifts = offsets(scenario, plans, settings)
    out: dict[str, SignalPlan] = {}
    for tls_id, plan in plans.items():
        offset = plan.program.offset
        if tls_id in shifts and plan.cycle_s > 0:
            offset = round(shifts[tls_id] % plan.cycle_s, 2) % plan.cycle_s
        program = replace(plan.program, program_id=COORDINATED_PROGRAM_ID, offset=offset)
        out[tls_id] = SignalPlan(program, dict(plan.params))
    return out


def offsets(
    scenario: Scenario, plans: dict[str, SignalPlan], params: CoordinatedParams
) -> dict[str, float]:
    """The tlsCoordinator offset of each coordinated signal for ``plans`` (cached), in s.

    The values are SUMO ``offset`` attributes as the tool writes them (any sign, not
    reduced to the cycle).
    """
    with tempfile.TemporaryDirectory(prefix="greenphase-coord-") as tmp:
        plan_file = Path(tmp) / "webster.add.xml"
        write_additional(plans.values(), plan_file)
        key = {
            **routed_demand_key(scenario, _CACHE_FORMAT),
            "plans": hashlib.sha256(plan_file.read_bytes()).hexdigest(),
            "speed_factor": params.speed_factor,
            "ignore_priority": params.ignore_priority,
        }
        cache_file = cache_dir().parent / "coordination" / cache_name(scenario, key)
        cached = read_cached(cache_file, key, "offsets")
        if cached is not None:
            return {str(k): float(v) for k, v in cached.items()}
        found = _run_coordinator(scenario, plan_file, Path(tmp), params)
    try:
        write_text(cache_file, json.dumps({"key": key, "offsets": found}, sort_keys=True))
    except OSError:
        pass  # a read-only cache only costs the next call another run
    return found


def _run(cmd: list[str], what: str, scenario: Scenario, **env: str) -> None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False,
                              env={**os.environ, **env})
    except (OSError, subprocess.TimeoutExpired) as err:
        raise NetworkError(f"{what} failed on {scenario.name}: {err}") from None
    if done.returncode != 0:
        lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()]
        raise NetworkError(f"{what} failed on {scenario.name} (exit {done.returncode}): "
                           f"{lines[-1] if lines else 'no message'}")


def _run_coordinator(
    scenario: Scenario, plan_file: Path, tmp: Path, params: CoordinatedParams
) -> dict[str, float]:
    from networks.sumo_home import sumo_home

    routes, out = tmp / "routes.rou.xml", tmp / "offsets.add.xml"
    # RESCO route files hold trips without routes, and the tool reads <route edges>
    _run([
        _sumo_binary("duarouter"), "--net-file", str(scenario.net_file),
        "--route-files", ",".join(str(r) for r in scenario.route_files),
        "--begin", str(scenario.begin), "--end", str(scenario.end), "--ignore-errors",
        "--seed", str(DUAROUTER_SEED), "--output-file", str(routes),
        "--alternatives-output", str(tmp / "routes.alt.xml"), "--no-step-log", "--no-warnings",
    ], "duarouter", scenario)  # fmt: skip
    tools = sumo_home() / "tools"
    cmd = [sys.executable, str(tools / "tlsCoordinator.py"), "--net-file", str(scenario.net_file),
           "--route-file", str(routes), "--additional-file", str(plan_file),
           "--output-file", str(out), "--speed-factor", format(params.speed_factor, ".10g")]
    if params.ignore_priority:
        cmd.append("--ignore-priority")
    _run(cmd, "tlsCoordinator", scenario, PYTHONPATH=str(tools))
    try:
        root = ET.parse(out).getroot()
    except (OSError, ET.ParseError) as err:
        raise NetworkError(f"tlsCoordinator wrote no offsets for {scenario.name}: {err}") from None
    return {e.get("id", ""): float(e.get("offset", "0")) for e in root.iter("tlLogic")}
