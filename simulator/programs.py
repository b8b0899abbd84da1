"""Alternative SUMO signal programs: actuated control and Webster fixed timing.

Each plan is a ``tlLogic`` with its own ``programID``; :func:`write_additional`
writes plans to an additional file that SUMO loads next to the net
(``sumo -a FILE``), and the simulator switches a signal to one of them by
programID at start (``trafficlight.setProgram``). The network's own program
stays loaded beside them.

* :func:`actuated_programs`: SUMO's gap-based actuated control on the network's
  own phases (programID ``greenphase-actuated``).
* :func:`webster_programs`: fixed timing re-optimised for a scenario's demand by
  Webster's formula (programID ``greenphase-webster``), the method of SUMO's
  ``tools/tlsCycleAdaptation.py`` re-implemented on :class:`networks.NetInfo`,
  on the flows that :mod:`simulator.movements` counts.

SUMO is located when a function needs it, never at import.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from pydantic import BaseModel, ConfigDict, Field, model_validator

from networks.files import write_text
from networks.netinfo import NetInfo, Phase, Program
from networks.scenario import Scenario
from simulator.movements import link_flows, movement_counts
from simulator.options import SimulationOptions

__all__ = [
    "ACTUATED_PROGRAM_ID", "STARTUP_LOST_TIME", "WEBSTER_PROGRAM_ID", "ActuatedParams",
    "ProgramParams", "SignalPlan", "WebsterParams", "actuated_programs", "critical_flow_ratios",
    "link_flows", "movement_counts", "plans_for", "webster_program", "webster_programs",
    "write_additional",
]

_DEFAULT = SimulationOptions()

ACTUATED_PROGRAM_ID = "greenphase-actuated"
"""programID of the plans made by :func:`actuated_programs`."""
WEBSTER_PROGRAM_ID = "greenphase-webster"
"""programID of the plans made by :func:`webster_programs`."""

STARTUP_LOST_TIME = 2.0
"""Default start-up lost time of a green phase in seconds (the usual 2 s of the HCM)."""
_ATTR_ENTITIES = {'"': "&quot;", "\n": "&#10;", "\t": "&#9;", "\r": "&#13;"}


@dataclass(frozen=True)
class SignalPlan:
    """A signal program together with the ``<param>`` entries written inside its ``tlLogic``.

    Attributes:
        program: Phases, type, programID and offset of the ``tlLogic``.
        params: ``<param key value>`` pairs, e.g. the actuated controller's ``max-gap``.
    """

    program: Program
    params: dict[str, str] = field(default_factory=dict)

    @property
    def cycle_s(self) -> float:
        """Sum of the phase durations (for an actuated plan: of the initial durations)."""
        return sum(p.duration for p in self.program.phases)


# --------------------------------------------------------------------------- parameters
class _Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ActuatedParams(_Params):
    """Settings of SUMO's actuated plans (:func:`actuated_programs`); SUMO's defaults."""

    max_gap: float = Field(default=3.0, gt=0)
    """SUMO ``max-gap``: the largest time gap between vehicles that extends a green, in s."""
    detector_gap: float = Field(default=2.0, ge=0)
    """SUMO ``detector-gap``: how far upstream of the stop line the loops lie, in s of travel."""
    passing_time: float = Field(default=1.9, ge=0)
    """SUMO ``passing-time``: the time a vehicle takes to pass a loop, in s."""
    min_dur: float | None = Field(default=None, gt=0)
    """Shortest green in s for every green phase; None: the network's own ``minDur``
    where it has one, else the run's minimum green (its protocol's)."""
    max_dur: float | None = Field(default=None, gt=0)
    """Longest green in s for every green phase; None: the network's own ``maxDur``
    where it has one, else the run's maximum green (its protocol's)."""
    show_detectors: bool = False
    """SUMO ``show-detectors``: show the loops in sumo-gui."""

    @model_validator(mode="after")
    def _ordered(self) -> ActuatedParams:
        if self.min_dur is not None and self.max_dur is not None and self.min_dur > self.max_dur:
            raise ValueError(f"min_dur ({self.min_dur:g}) exceeds max_dur ({self.max_dur:g})")
        return self


class WebsterParams(_Params):
    """Settings of Webster's fixed timing (:func:`webster_programs`)."""

    saturation_flow: float = Field(default=1800.0, gt=0)
    """Saturation flow of one lane, in veh/h."""
    lost_time_per_phase: float | None = Field(default=None, ge=0)
    """Lost time per green phase in s; None: yellow and all-red plus ``startup_lost_time``."""
    startup_lost_time: float = Field(default=STARTUP_LOST_TIME, ge=0)
    """Start-up lost time of a green phase, in s."""
    min_cycle: float = Field(default=30.0, gt=0)
    """Shortest cycle, in s."""
    max_cycle: float = Field(default=120.0, gt=0)
    """Longest cycle, in s."""
    min_green: float = Field(default=_DEFAULT.min_green, gt=0)
    """Shortest green phase, in s."""

    @model_validator(mode="after")
    def _ordered(self) -> WebsterParams:
        if self.min_cycle > self.max_cycle:
            raise ValueError(f"min_cycle ({self.min_cycle:g}) exceeds max_cycle "
                             f"({self.max_cycle:g})")
        return self


ProgramParams = ActuatedParams | WebsterParams
"""The settings of a SUMO program built here (coordinated timing's extend Webster's)."""


def plans_for(
    program: str, scenario: Scenario, params: ProgramParams | None = None,
    options: SimulationOptions | None = None,
) -> dict[str, SignalPlan]:
    """The plans of program ``actuated``, ``webster`` or ``coordinated`` with ``params``.

    What ``params`` leaves unset comes from the run's ``options``: the minimum and
    maximum green of a protocol, and the demand's scale, which Webster's flows follow.

    Raises:
        ValueError: An unknown program, or settings of another program.
    """
    from simulator.coordination import CoordinatedParams, coordinated_programs

    kinds: dict[str, type[ProgramParams]] = {
        "actuated": ActuatedParams, "webster": WebsterParams, "coordinated": CoordinatedParams}
    if program not in kinds:
        raise ValueError(f"no plans to build for program {program!r}")
    settings = kinds[program]() if params is None else params
    if type(settings) is not kinds[program]:  # coordinated's settings extend Webster's
        raise ValueError(f"program {program!r} takes {kinds[program].__name__}, "
                         f"not {type(settings).__name__}")
    run = options if options is not None else _DEFAULT
    if isinstance(settings, ActuatedParams):
        return actuated_programs(scenario.net, **settings.model_dump(), min_green=run.min_green,
                                 max_green=run.max_green)
    if "min_green" not in settings.model_fields_set:
        settings = settings.model_copy(update={"min_green": run.min_green})
    if isinstance(settings, CoordinatedParams):
        return coordinated_programs(scenario, settings, demand_scale=run.demand.scale)
    return webster_programs(scenario, **settings.model_dump(), demand_scale=run.demand.scale)


# --------------------------------------------------------------------------- actuated


def actuated_programs(
    net: NetInfo,
    *,
    min_green: float = _DEFAULT.min_green,
    max_green: float = _DEFAULT.max_green,
    max_gap: float = 3.0,
    detector_gap: float = 2.0,
    passing_time: float = 1.9,
    show_detectors: bool = False,
    min_dur: float | None = None,
    max_dur: float | None = None,
) -> dict[str, SignalPlan]:
    """SUMO's gap-based actuated control on every signal's own phases.

    SUMO's actuated rule (SUMO documentation, "Traffic Lights", "Actuated Traffic
    Lights", time-gap based): SUMO places an induction loop on every lane a
    phase gives green to, ``detector-gap`` seconds of travel (at the lane's
    speed limit) upstream of the stop line. A green phase runs for at least
    ``minDur``; after that it is prolonged as long as vehicles keep crossing
    the loops of its green lanes with time gaps of at most ``max-gap`` seconds,
    and ends when the gap on all of them exceeds ``max-gap`` (gap-out) or when
    it has run ``maxDur`` (max-out). A phase whose ``minDur`` equals its
    ``maxDur`` (or that has neither) is fixed. ``passing-time`` is SUMO's estimate
    of the time a vehicle needs to pass a loop, used with ``max-gap`` when it
    places the loops; ``show-detectors`` only shows them in sumo-gui.

    Green phases (some ``G``/``g``, no yellow) get the network's own ``minDur``
    and ``maxDur`` where it has them, else ``min_green`` and ``max_green``, with
    the initial duration clamped into that range; yellow and all-red phases
    keep their fixed durations. Phase order, states and offset are the static
    program's.

    Args:
        net: The network; every signal of ``net.tls_ids`` gets a plan.
        min_green: ``minDur`` of a green phase that has none of its own, in seconds.
        max_green: ``maxDur`` of a green phase that has none of its own, in seconds.
        max_gap: SUMO ``max-gap`` parameter, in seconds (SUMO's default: 3.0).
        detector_gap: SUMO ``detector-gap`` parameter, in seconds (SUMO's default: 2.0).
        passing_time: SUMO ``passing-time`` parameter, in seconds (SUMO's default: 1.9).
        show_detectors: SUMO ``show-detectors`` parameter.
        min_dur: ``minDur`` of every green phase, in place of the network's own.
        max_dur: ``maxDur`` of every green phase, in place of the network's own.

    Returns:
        Plans of type ``actuated`` and programID :data:`ACTUATED_PROGRAM_ID`, by signal id.

    Raises:
        ValueError: If ``min_green`` is not positive or exceeds ``max_green``.
    """
    if not 0 < min_green <= max_green:
        raise ValueError(f"need 0 < min_green <= max_green, got {min_green} and {max_green}")
    params = {
        "max-gap": _num(max_gap),
        "detector-gap": _num(detector_gap),
        "passing-time": _num(passing_time),
        "show-detectors": "true" if show_detectors else "false",
    }
    plans: dict[str, SignalPlan] = {}
    for tls_id in net.tls_ids:
        static = net.programs[tls_id]
        phases = []
        for phase in static.phases:
            if phase.is_green:
                low = _first(min_dur, phase.min_dur, min_green)
                high = _first(max_dur, phase.max_dur, max_green)
                high = max(low, high)
                duration = min(max(phase.duration, low), high)
                phases.append(Phase(duration, phase.state, low, high))
            else:
                phases.append(Phase(phase.duration, phase.state))
        program = Program(tls_id, ACTUATED_PROGRAM_ID, "actuated", static.offset, tuple(phases))
        plans[tls_id] = SignalPlan(program, dict(params))
    return plans


def _first(*values: float | None) -> float:
    """The first value that is not None (the last is never None)."""
    return next(v for v in values if v is not None)


# --------------------------------------------------------------------------- Webster


def critical_flow_ratios(
    net: NetInfo, tls_id: str, flows: tuple[float, ...], *, saturation_flow: float = 1800.0
) -> dict[int, float]:
    """Webster's critical flow ratio of each green phase of a signal's static program.

    Each link's flow is split equally over the green phases that let it go,
    with major (``G``) or minor (``g``, yielding) green, as in
    ``tlsCycleAdaptation.py`` "if a lane group has green times in more than
    one phase, the respective flows will be equally divided". Unlike that
    tool, minor greens count even where the link also has a major green: the
    RESCO programs let left turns go permissively in the long through phase and
    protected in a short one, and counting only the protected phase
    over-sizes it (cologne1: mean delay 55 s instead of 42 s). The critical
    ratio of a phase is ``max over incoming lanes of (the lane's flow in that
    phase / saturation_flow)``.

    Args:
        net: The network.
        tls_id: The signal.
        flows: Flow in veh/h of each link of ``net.links[tls_id]`` (:func:`link_flows`).
        saturation_flow: Saturation flow of one lane, in veh/h.

    Returns:
        ``y_i`` by index of a green phase in ``net.programs[tls_id].phases``.
    """
    phases = net.programs[tls_id].phases
    greens = [i for i, p in enumerate(phases) if p.is_green]
    lane_flow: dict[int, dict[str, float]] = {i: defaultdict(float) for i in greens}
    for link, flow in zip(net.links[tls_id], flows, strict=True):
        if flow <= 0:
            continue
        served = [i for i in greens if _signal(phases[i], link.index) in "Gg"]
        for i in served:
            lane_flow[i][link.in_lane] += flow / len(served)
    return {i: max(lane_flow[i].values(), default=0.0) / saturation_flow for i in greens}


def _signal(phase: Phase, index: int) -> str:
    return phase.state[index] if 0 <= index < len(phase.state) else "r"


def webster_program(
    program: Program,
    ratios: Mapping[int, float],
    *,
    lost_time_per_phase: float | None = None,
    startup_lost_time: float = STARTUP_LOST_TIME,
    min_cycle: float = 30.0,
    max_cycle: float = 120.0,
    min_green: float = _DEFAULT.min_green,
) -> Program:
    """Webster's fixed timing for one program, given the critical flow ratio of its greens.

    ``C0 = (1.5 L + 5) / (1 - Y)``, with ``Y`` the sum of the ratios (capped at
    0.9, past which the formula breaks down) and ``L`` the lost time per cycle,
    rounded to whole seconds and clamped to ``[min_cycle, max_cycle]``. The
    non-green phases keep their durations; the effective green time ``C0 - L``
    is split over the green phases in proportion to their ratios, and each
    green phase shows its share plus its start-up lost time, in whole seconds,
    at least ``ceil(min_green)`` (which is all a zero-flow phase gets). The
    cycle exceeds ``C0`` only when the minimum greens do not fit in it.

    Args:
        program: The signal's own program (its phases, states and offset are kept).
        ratios: Critical flow ratio by index of a green phase (:func:`critical_flow_ratios`).
        lost_time_per_phase: Lost time per green phase in seconds; None takes the
            program's yellow and all-red time (all non-green phases) plus
            ``startup_lost_time`` per green phase.
        startup_lost_time: Start-up lost time of a green phase, in seconds (used only
            when ``lost_time_per_phase`` is None).
        min_cycle: Shortest cycle, in seconds.
        max_cycle: Longest cycle, in seconds.
        min_green: Shortest green phase, in seconds.

    Returns:
        A static program with programID :data:`WEBSTER_PROGRAM_ID`; if no green
        phase has any flow, the program's own durations are kept.
    """
    greens = [i for i, p in enumerate(program.phases) if p.is_green]
    fixed = sum(p.duration for i, p in enumerate(program.phases) if i not in greens)
    y = {i: max(0.0, float(ratios.get(i, 0.0))) for i in greens}
    total_y = sum(y.values())
    if not greens or total_y <= 0:
        phases = tuple(Phase(p.duration, p.state) for p in program.phases)
        return Program(program.tls_id, WEBSTER_PROGRAM_ID, "static", program.offset, phases)
    if lost_time_per_phase is None:
        lost = fixed + startup_lost_time * len(greens)
    else:
        lost = lost_time_per_phase * len(greens)
    cycle = (1.5 * lost + 5.0) / (1.0 - min(total_y, 0.9))
    cycle = min(max(round(cycle), min_cycle), max_cycle)
    # displayed green = effective green + (phase lost time - its clearance time)
    extra = (lost - fixed) / len(greens)
    greens_s = _split(cycle - fixed, y, extra, math.ceil(min_green))
    phases = tuple(
        Phase(float(greens_s[i]) if i in greens_s else p.duration, p.state)
        for i, p in enumerate(program.phases)
    )
    return Program(program.tls_id, WEBSTER_PROGRAM_ID, "static", program.offset, phases)


def _split(total: float, weights: Mapping[int, float], base: float, minimum: int) -> dict[int, int]:
    """Whole seconds per phase: ``base`` plus a share of the rest proportional to its weight.

    Phases of zero weight, and phases whose amount would fall below ``minimum``,
    get ``minimum``; the others share what is left. The amounts add up to
    ``round(total)`` unless the minimums alone exceed it.
    """
    result: dict[int, float] = {i: minimum for i, w in weights.items() if w <= 0}
    free = [i for i, w in weights.items() if w > 0]
    while free:
        pool = total - sum(result.values()) - base * len(free)
        weight = sum(weights[i] for i in free)
        amounts = {i: base + pool * weights[i] / weight for i in free}
        low = [i for i in free if amounts[i] < minimum]
        if not low:
            result.update(amounts)
            break
        result.update(dict.fromkeys(low, minimum))
        free = [i for i in free if i not in low]
    whole = {i: max(minimum, math.floor(v)) for i, v in result.items()}
    spare = max(round(total), minimum * len(result)) - sum(whole.values())
    for i in sorted(result, key=lambda i: whole[i] - result[i])[: max(0, spare)]:
        whole[i] += 1  # largest remainders first, so the greens add up to ``total``
    return whole


def webster_programs(
    scenario: Scenario,
    *,
    saturation_flow: float = 1800.0,
    lost_time_per_phase: float | None = None,
    startup_lost_time: float = STARTUP_LOST_TIME,
    min_cycle: float = 30.0,
    max_cycle: float = 120.0,
    min_green: float = _DEFAULT.min_green,
    demand_scale: float = 1.0,
) -> dict[str, SignalPlan]:
    """Fixed timing re-optimised for the scenario's demand by Webster's formula.

    The method of SUMO's ``tools/tlsCycleAdaptation.py``: the demand departing
    within ``[begin, end)`` is routed (:func:`movement_counts`, cached), turned
    into hourly link flows (:func:`link_flows`), then into each green phase's
    critical flow ratio ``y_i = max over lanes served by phase i of lane flow /
    saturation flow`` (:func:`critical_flow_ratios`); the cycle is Webster's
    ``C0 = (1.5 L + 5) / (1 - Y)`` with ``Y = sum y_i`` and the green time
    ``C0 - L`` is split in proportion to ``y_i`` (:func:`webster_program`).
    Each signal is optimised on its own (no coordination, offsets kept).

    The lost time ``L`` is by default the program's yellow and all-red time
    plus a start-up lost time of :data:`STARTUP_LOST_TIME` per green phase.
    SUMO's drivers stop at yellow and start slowly, and without the start-up
    term Webster picks 30 s cycles with 5 s greens that the cologne8 demand
    overflows (mean time loss + depart delay over 5 seeds: 137 s against the
    static program's 49 s; 44 s with it).

    Args:
        scenario: The network, its demand and its time window.
        saturation_flow: Saturation flow of one lane, in veh/h.
        lost_time_per_phase: Lost time per green phase in seconds; None takes the
            program's yellow and all-red time plus ``startup_lost_time`` per green phase.
        startup_lost_time: Start-up lost time of a green phase, in seconds (0 gives
            ``L`` = yellow + all-red); unused when ``lost_time_per_phase`` is given.
        min_cycle: Shortest cycle, in seconds.
        max_cycle: Longest cycle, in seconds.
        min_green: Shortest green phase, in seconds (also given to phases without flow).
        demand_scale: Factor on the route files' flows (the demand's ``scale``).

    Returns:
        Static plans with programID :data:`WEBSTER_PROGRAM_ID`, by signal id of ``net.tls_ids``.

    Raises:
        NetworkError: If SUMO's duarouter is missing or fails.
        ValueError: If the cycle or green bounds are inconsistent.
    """
    if not 0 < min_cycle <= max_cycle:
        raise ValueError(f"need 0 < min_cycle <= max_cycle, got {min_cycle} and {max_cycle}")
    if min_green <= 0 or saturation_flow <= 0:
        raise ValueError("min_green and saturation_flow must be positive")
    net = scenario.net
    counts = {move: n * demand_scale for move, n in movement_counts(scenario).items()}
    flows = link_flows(net, counts, scenario.horizon_s)
    plans: dict[str, SignalPlan] = {}
    for tls_id in net.tls_ids:
        ratios = critical_flow_ratios(net, tls_id, flows[tls_id], saturation_flow=saturation_flow)
        program = webster_program(
            net.programs[tls_id],
            ratios,
            lost_time_per_phase=lost_time_per_phase,
            startup_lost_time=startup_lost_time,
            min_cycle=min_cycle,
            max_cycle=max_cycle,
            min_green=min_green,
        )
        plans[tls_id] = SignalPlan(program)
    return plans


# --------------------------------------------------------------------------- output


def _num(value: float) -> str:
    return format(float(value), ".10g")


def _attr(value: str) -> str:
    return escape(str(value), _ATTR_ENTITIES)


def write_additional(plans: Iterable[SignalPlan], path: Path) -> None:
    """Write signal plans to a SUMO additional file, atomically.

    One ``<tlLogic id programID type offset>`` per plan, with its ``<param>``
    entries and ``<phase duration state [minDur maxDur]>`` elements; ids and
    values are XML-escaped.

    Args:
        plans: The plans; a signal may have several, each with its own programID.
        path: The file to write (parent folders are created).

    Raises:
        ValueError: If two plans share a signal id and programID.
    """
    path = Path(path)
    seen: set[tuple[str, str]] = set()
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<additional>"]
    for plan in plans:
        prog = plan.program
        if (prog.tls_id, prog.program_id) in seen:
            raise ValueError(f"two plans for signal {prog.tls_id!r}, program {prog.program_id!r}")
        seen.add((prog.tls_id, prog.program_id))
        lines.append(
            f'    <tlLogic id="{_attr(prog.tls_id)}" programID="{_attr(prog.program_id)}" '
            f'type="{_attr(prog.kind)}" offset="{_num(prog.offset)}">'
        )
        for key, value in plan.params.items():
            lines.append(f'        <param key="{_attr(key)}" value="{_attr(value)}"/>')
        for phase in prog.phases:
            extra = ""
            if phase.min_dur is not None:
                extra += f' minDur="{_num(phase.min_dur)}"'
            if phase.max_dur is not None:
                extra += f' maxDur="{_num(phase.max_dur)}"'
            lines.append(
                f'        <phase duration="{_num(phase.duration)}" '
                f'state="{_attr(phase.state)}"{extra}/>'
            )
        lines.append("    </tlLogic>")
    lines.append("</additional>")
    write_text(path, "\n".join(lines) + "\n")
