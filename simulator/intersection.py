"""One signalised intersection: its green phases and the rules for changing them.

The green phases are read from the network's own program. A change of green
always passes through yellow (and all-red, where the network's program has
one, or where a fixed all-red is set); a green is held for at least
``min_green`` seconds, and after ``max_green`` seconds the next green in the
cycle is forced. The yellow and all-red are the program's own unless a
protocol (:mod:`simulator.protocols`) fixes them. The object only plans signal
states; the simulation applies them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from networks import Link, Program


class ProgramError(ValueError):
    """A signal program that the intersection model cannot use; the message is one line."""


@dataclass(frozen=True)
class Layout:
    """What a controller may know of an intersection: the geometry, not the simulator."""

    tls_id: str
    """SUMO's traffic-light id."""
    green_states: tuple[str, ...]
    """Signal state string of each green phase."""
    incoming_lanes: tuple[str, ...]
    """Controlled incoming lanes (each has an entry detector)."""
    outgoing_lanes: tuple[str, ...]
    """Lanes the controlled movements lead to (each has an exit detector)."""
    movements: tuple[tuple[tuple[int, int], ...], ...]
    """Per green phase, the (incoming, outgoing) lane index pairs that have right of way."""
    min_green: float
    """Shortest green in seconds."""
    max_green: float
    """Longest green in seconds before the next is forced."""
    yellow: float
    """Yellow time in seconds on every change."""
    all_red: float
    """All-red time in seconds after the yellow (0 when the network has none)."""

    @property
    def num_phases(self) -> int:
        """Number of green phases a controller chooses from."""
        return len(self.green_states)


def _clearance(program: Program) -> tuple[float, float]:
    """Yellow and all-red times of a program: the longest of each it contains."""
    yellow = max((p.duration for p in program.phases if p.is_yellow), default=3.0)
    all_red = max((p.duration for p in program.phases if p.is_all_red), default=0.0)
    return yellow, all_red


def green_states(program: Program) -> list[str]:
    """The distinct green phases of a program, in program order."""
    return list(dict.fromkeys(p.state for p in program.phases if p.is_green))


def layout_of(
    program: Program,
    links: tuple[Link, ...],
    *,
    min_green: float,
    max_green: float,
    yellow: float | None = None,
    all_red: float | None = None,
) -> Layout:
    """Build an intersection's layout from its program and controlled links.

    Args:
        program: The network's program of the signal (its greens, and clearance times).
        links: The signal's controlled links.
        min_green: Shortest green in seconds.
        max_green: Longest green in seconds.
        yellow: Yellow of every change in seconds; ``None``: the program's longest.
        all_red: All-red after the yellow in seconds (0: none); ``None``: the program's.

    Raises:
        ProgramError: The program has no green, too short a state, or a bound is out of range.
    """
    tls = program.tls_id
    greens = green_states(program)
    if not greens:
        raise ProgramError(f"signal {tls!r}: its program has no green phase to control")
    width = max(link.index for link in links) + 1
    short = [s for s in greens if len(s) < width]
    if short:
        raise ProgramError(
            f"signal {tls!r}: program state {short[0]!r} covers {len(short[0])} links, "
            f"the network has {width}"
        )
    if not 0 < min_green <= max_green:
        raise ProgramError(f"min_green ({min_green}) must be > 0 and <= max_green ({max_green})")
    incoming = list(dict.fromkeys(link.in_lane for link in links))
    outgoing = list(dict.fromkeys(link.out_lane for link in links))
    movements = tuple(
        tuple(
            dict.fromkeys(
                (incoming.index(link.in_lane), outgoing.index(link.out_lane))
                for link in links
                if state[link.index] in "Gg"
            )
        )
        for state in greens
    )
    if yellow is not None and not yellow > 0:
        raise ProgramError(f"yellow ({yellow}) must be > 0")
    if all_red is not None and not all_red >= 0:
        raise ProgramError(f"all_red ({all_red}) must be >= 0")
    own_yellow, own_all_red = _clearance(program)
    return Layout(
        tls, tuple(greens), tuple(incoming), tuple(outgoing), movements,
        float(min_green), float(max_green),
        own_yellow if yellow is None else float(yellow),
        own_all_red if all_red is None else float(all_red),
    )


def yellow_state(current: str, following: str) -> str:
    """Yellow for every movement that loses right of way; the rest keep their signal."""
    return "".join(
        "y" if c in "Gg" and n not in "Gg" else c for c, n in zip(current, following, strict=True)
    )


def all_red_state(current: str, following: str) -> str:
    """Red for all but the movements that are green before and after."""
    return "".join(
        c if c in "Gg" and n in "Gg" else ("s" if c == "s" else "r")
        for c, n in zip(current, following, strict=True)
    )


@dataclass
class Intersection:
    """The phase logic of one signal under external control.

    ``decide(phase, now)`` takes the controller's wish and returns the signal
    states to apply and when; the green only changes when the rules allow.
    """

    layout: Layout
    green: int = 0
    """Index of the current (or coming) green phase."""
    green_since: float = 0.0
    """Simulated time at which the current green began (or will begin)."""
    _pending: list[tuple[float, str]] = field(default_factory=list)

    def reset(self, now: float) -> list[tuple[float, str]]:
        """Start in the first green phase at ``now``."""
        self.green, self.green_since, self._pending = 0, now, []
        return [(now, self.layout.green_states[0])]

    def time_in_phase(self, now: float) -> float:
        """Seconds the current green has lasted (0 during a change)."""
        return max(0.0, now - self.green_since)

    def decide(self, phase: int, now: float) -> list[tuple[float, str]]:
        """Plan the signal states for a wished-for green ``phase`` at time ``now``."""
        lay = self.layout
        if not 0 <= phase < lay.num_phases:
            raise ValueError(f"signal {lay.tls_id!r}: phase {phase} not in 0..{lay.num_phases - 1}")
        held = now - self.green_since
        if held < lay.min_green:  # also true while a change is under way
            return []
        if phase == self.green:
            if held < lay.max_green:
                return []
            phase = (self.green + 1) % lay.num_phases
            if phase == self.green:
                return []
        current, following = lay.green_states[self.green], lay.green_states[phase]
        plan = [(now, yellow_state(current, following))]
        start = now + lay.yellow
        if lay.all_red > 0:
            plan.append((start, all_red_state(current, following)))
            start += lay.all_red
        plan.append((start, following))
        self.green, self.green_since = phase, start
        return plan
