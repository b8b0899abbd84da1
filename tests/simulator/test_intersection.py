"""Phase logic of one intersection, without SUMO: clearance states, min/max green, layouts."""

from __future__ import annotations

import pytest

from networks import Link, Phase, Program
from simulator.intersection import (
    Intersection,
    Layout,
    ProgramError,
    all_red_state,
    green_states,
    layout_of,
    yellow_state,
)

# Four links: 0, 1 north-south (through, left); 2, 3 east-west (through, left).
LINKS = (
    Link(0, "n_0", "s_0", "s"),
    Link(1, "n_0", "e_0", "l"),
    Link(2, "e_0", "w_0", "s"),
    Link(3, "e_1", "n_0", "l"),
)


def program(*phases: tuple[float, str], tls: str = "J") -> Program:
    return Program(tls, "0", "static", 0.0, tuple(Phase(d, s) for d, s in phases))


TWO_PHASES = program((30, "GGrr"), (4, "yyrr"), (2, "rrrr"), (30, "rrGG"), (4, "rryy"), (2, "rrrr"))


def layout(*, min_green: float = 10, max_green: float = 30, prog: Program = TWO_PHASES) -> Layout:
    return layout_of(prog, LINKS, min_green=min_green, max_green=max_green)


# ----------------------------------------------------------------- clearance states
@pytest.mark.parametrize(
    ("current", "following", "expected"),
    [
        ("GGrr", "rrGG", "yyrr"),
        ("GgGr", "GrrG", "Gyyr"),  # a movement green in both keeps its green
        ("rrrr", "GGGG", "rrrr"),
        ("sGg", "srG", "syg"),
    ],
)
def test_yellow_state_turns_only_losing_greens_yellow(
    current: str, following: str, expected: str
) -> None:
    assert yellow_state(current, following) == expected


@pytest.mark.parametrize(
    ("current", "following", "expected"),
    [
        ("GGrr", "rrGG", "rrrr"),
        ("GgGr", "GrrG", "Grrr"),  # green before and after: not stopped by the all-red
        ("sGr", "srG", "srr"),  # a stop sign stays a stop sign
        ("GGGG", "gGGg", "GGGG"),
    ],
)
def test_all_red_state_keeps_only_greens_that_stay_green(
    current: str, following: str, expected: str
) -> None:
    assert all_red_state(current, following) == expected


def test_clearance_states_refuse_strings_of_different_length() -> None:
    with pytest.raises(ValueError):
        yellow_state("GGr", "rrGG")
    with pytest.raises(ValueError):
        all_red_state("GGrr", "rG")


# ------------------------------------------------------------------------- layout
def test_layout_reads_greens_clearances_lanes_and_movements() -> None:
    lay = layout()
    assert lay.tls_id == "J"
    assert lay.green_states == ("GGrr", "rrGG")
    assert lay.num_phases == 2
    assert (lay.yellow, lay.all_red) == (4, 2)
    assert lay.incoming_lanes == ("n_0", "e_0", "e_1")
    assert lay.outgoing_lanes == ("s_0", "e_0", "w_0", "n_0")
    # phase 0 serves n_0 -> s_0 and n_0 -> e_0; phase 1 e_0 -> w_0 and e_1 -> n_0
    assert lay.movements == (((0, 0), (0, 1)), ((1, 2), (2, 3)))


def test_green_states_are_distinct_and_in_program_order() -> None:
    prog = program((10, "rrGG"), (3, "rryy"), (10, "GGrr"), (3, "yyrr"), (10, "rrGG"))
    assert green_states(prog) == ["rrGG", "GGrr"]


def test_layout_without_all_red_phase_has_zero_all_red() -> None:
    lay = layout(prog=program((30, "GGrr"), (3, "yyrr"), (30, "rrGG"), (3, "rryy")))
    assert (lay.yellow, lay.all_red) == (3, 0)


def test_layout_without_fixed_clearance_is_the_programs() -> None:
    assert layout_of(TWO_PHASES, LINKS, min_green=10, max_green=30, yellow=None,
                     all_red=None) == layout()


def test_fixed_yellow_and_all_red_replace_the_programs() -> None:
    lay = layout_of(TWO_PHASES, LINKS, min_green=10, max_green=30, yellow=2, all_red=0)
    assert (lay.yellow, lay.all_red) == (2, 0)
    assert lay.green_states == layout().green_states
    only_yellow = layout_of(TWO_PHASES, LINKS, min_green=10, max_green=30, yellow=3)
    assert (only_yellow.yellow, only_yellow.all_red) == (3, 2)


def test_a_fixed_all_red_is_added_to_a_program_without_one() -> None:
    prog = program((30, "GGrr"), (3, "yyrr"), (30, "rrGG"), (3, "rryy"))
    inter = Intersection(layout_of(prog, LINKS, min_green=5, max_green=30, all_red=1.5))
    inter.reset(0.0)
    assert inter.decide(1, 20.0) == [(20.0, "yyrr"), (23.0, "rrrr"), (24.5, "rrGG")]


@pytest.mark.parametrize(("yellow", "all_red", "words"), [(0, None, "yellow"), (-1, 0, "yellow"),
                                                          (3, -0.5, "all_red")])
def test_layout_refuses_bad_clearance(yellow: float, all_red: float | None, words: str) -> None:
    with pytest.raises(ProgramError, match=words):
        layout_of(TWO_PHASES, LINKS, min_green=10, max_green=30, yellow=yellow, all_red=all_red)


def test_layout_refuses_a_program_with_no_green_phase() -> None:
    with pytest.raises(ProgramError, match="no green phase"):
        layout(prog=program((5, "yyyy"), (5, "rrrr")))


def test_layout_refuses_a_state_shorter_than_the_link_indices() -> None:
    with pytest.raises(ProgramError, match="covers 3 links, the network has 4"):
        layout(prog=program((30, "GGr"), (3, "yyr"), (30, "rrG")))


@pytest.mark.parametrize(("min_green", "max_green"), [(0, 30), (40, 30), (-5, 10)])
def test_layout_refuses_bad_green_bounds(min_green: float, max_green: float) -> None:
    with pytest.raises(ProgramError, match="min_green"):
        layout(min_green=min_green, max_green=max_green)


def test_program_error_is_a_value_error() -> None:
    assert issubclass(ProgramError, ValueError)


# -------------------------------------------------------------------- decide
def test_reset_starts_in_the_first_green() -> None:
    inter = Intersection(layout())
    assert inter.reset(100.0) == [(100.0, "GGrr")]
    assert (inter.green, inter.green_since) == (0, 100.0)
    assert inter.time_in_phase(112.5) == 12.5


def test_decide_holds_the_green_for_min_green() -> None:
    inter = Intersection(layout(min_green=10))
    inter.reset(0.0)
    for now in (0.0, 5.0, 9.9):
        assert inter.decide(1, now) == []
        assert inter.green == 0


def test_decide_changes_through_yellow_then_all_red_then_green() -> None:
    inter = Intersection(layout(min_green=10))
    inter.reset(0.0)
    plan = inter.decide(1, 10.0)
    # yellow for 4 s, all-red for 2 s, then the new green
    assert plan == [(10.0, "yyrr"), (14.0, "rrrr"), (16.0, "rrGG")]
    assert (inter.green, inter.green_since) == (1, 16.0)
    # no time in phase, and no new decision, while the change is under way
    assert inter.time_in_phase(12.0) == 0.0
    assert inter.decide(0, 15.0) == []
    # the new green is held for min_green from its start, not from the decision
    assert inter.decide(0, 25.9) == []
    assert inter.decide(0, 26.0) == [(26.0, "rryy"), (30.0, "rrrr"), (32.0, "GGrr")]


def test_decide_takes_a_fixed_yellow_without_all_red() -> None:
    inter = Intersection(layout_of(TWO_PHASES, LINKS, min_green=7, max_green=30, yellow=3,
                                   all_red=0))
    inter.reset(0.0)
    assert inter.decide(1, 10.0) == [(10.0, "yyrr"), (13.0, "rrGG")]
    # RESCO's step: 3 s of yellow, 7 s of green, and the next change at the next decision
    assert inter.decide(0, 20.0) == [(20.0, "rryy"), (23.0, "GGrr")]


def test_decide_without_all_red_goes_straight_from_yellow_to_green() -> None:
    lay = layout(prog=program((30, "GGrr"), (3, "yyrr"), (30, "rrGG"), (3, "rryy")))
    inter = Intersection(lay)
    inter.reset(0.0)
    assert inter.decide(1, 20.0) == [(20.0, "yyrr"), (23.0, "rrGG")]


def test_decide_keeps_the_wished_green_until_max_green() -> None:
    inter = Intersection(layout(min_green=10, max_green=30))
    inter.reset(0.0)
    for now in (10.0, 20.0, 29.9):
        assert inter.decide(0, now) == []
    assert inter.green == 0


def test_decide_forces_the_next_green_after_max_green() -> None:
    inter = Intersection(layout(min_green=10, max_green=30))
    inter.reset(0.0)
    plan = inter.decide(0, 30.0)
    assert plan == [(30.0, "yyrr"), (34.0, "rrrr"), (36.0, "rrGG")]
    assert inter.green == 1
    # and the forcing wraps around the cycle
    assert inter.decide(1, 66.0) == [(66.0, "rryy"), (70.0, "rrrr"), (72.0, "GGrr")]
    assert inter.green == 0


def test_decide_forces_the_next_green_in_cycle_order() -> None:
    prog = program((20, "GGrr"), (3, "yyrr"), (20, "rrGr"), (3, "rryr"), (20, "rrrG"), (3, "rrry"))
    inter = Intersection(layout(prog=prog, min_green=5, max_green=20))
    inter.reset(0.0)
    assert inter.decide(0, 20.0)[-1] == (23.0, "rrGr")
    assert inter.decide(1, 43.0)[-1] == (46.0, "rrrG")
    assert inter.decide(2, 66.0)[-1] == (69.0, "GGrr")


def test_a_single_green_is_never_changed() -> None:
    inter = Intersection(layout(prog=program((60, "GGGG"), (3, "yyyy")), max_green=30))
    inter.reset(0.0)
    assert inter.decide(0, 100.0) == []
    assert inter.green == 0


@pytest.mark.parametrize("phase", [-1, 2, 7])
def test_decide_refuses_a_phase_out_of_range(phase: int) -> None:
    inter = Intersection(layout())
    inter.reset(0.0)
    with pytest.raises(ValueError, match="not in 0..1"):
        inter.decide(phase, 50.0)
