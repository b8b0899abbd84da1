"""Work above a sane size: refused unless asked for explicitly, with what it would cost.

A typo (``--end 99999999999999``, ``--hidden 100000000,100000000``, a sweep axis with one
zero too many) should not start days of simulation or try to allocate terabytes. Above
each limit here a command stops with one line naming the size found, the limit, the
estimated cost and the flag that lifts the limit: ``--allow-large`` on the command line,
``allow_large = true`` in a spec. The library itself (the environments, ``sweep()``,
``train()``) takes any size its caller gives.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_HORIZON_S = 24 * 3600
"""Longest simulated horizon of one run without the flag: a day."""
MAX_RUNS = 2_000
"""Most runs (controller x seed x sweep point) of one spec without the flag."""
MAX_PARAMETERS = 10_000_000
"""Most weights of one policy network without the flag (signal policies have thousands)."""
FLAG = "--allow-large"
"""The command-line flag that lifts every limit."""
SPEC_KEY = "allow_large = true"
"""The spec key that lifts every limit for a spec."""
CPU_S_PER_SIMULATED_HOUR = 0.5
"""CPU seconds one simulated hour costs at the least: cologne1's one signal (measured; the 21
of ingolstadt21 take about 5 s)."""
BYTES_PER_PARAMETER = 16
"""Memory training takes per weight: the weight, its gradient and two optimiser moments."""


class TooLargeError(ValueError):
    """Work above a limit without the flag; the message is one line with the cost and flag."""


def _refuse_above(found: float, limit: float, allow_large: bool, message: str) -> None:
    if found > limit and not allow_large:
        raise TooLargeError(message)


def _lift(spec: bool) -> str:
    return f"give {FLAG}" + (f" (or {SPEC_KEY} in the spec)" if spec else "") + \
        " to run it anyway"


def duration(seconds: float) -> str:
    """A length of time for a person: ``45 s``, ``12 min``, ``3.5 h``, ``2.1 days``, ``3 years``."""
    for unit, size in (("years", 365 * 86400.0), ("days", 86400.0), ("h", 3600.0),
                       ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.0f} s"


def simulation_cost(horizon_s: float, runs: int) -> str:
    """What ``runs`` runs of ``horizon_s`` simulated seconds cost, in words."""
    hours = horizon_s * runs / 3600
    return (f"{hours:,.0f} simulated hours in all, at least "
            f"{duration(hours * CPU_S_PER_SIMULATED_HOUR)} of CPU")


def check_horizon(horizon_s: float, *, runs: int = 1, allow_large: bool = False,
                  spec: bool = False) -> None:
    """Refuse a horizon above :data:`MAX_HORIZON_S` unless ``allow_large``.

    Args:
        horizon_s: Simulated seconds of one run.
        runs: Runs of that horizon the command would make, for the cost.
        allow_large: The flag was given.
        spec: The work comes from a spec (the message names its key too).

    Raises:
        TooLargeError: Above the limit without the flag.
    """
    _refuse_above(horizon_s, MAX_HORIZON_S, allow_large,
                  f"a horizon of {horizon_s / 3600:,.1f} simulated hours per run is above the "
                  f"limit of {MAX_HORIZON_S // 3600} h: {simulation_cost(horizon_s, runs)}; "
                  f"{_lift(spec)}")


def check_runs(runs: int, horizon_s: float, *, allow_large: bool = False) -> None:
    """Refuse a spec of more than :data:`MAX_RUNS` runs unless ``allow_large``.

    ``runs`` counts controllers x seeds x sweep points; ``horizon_s`` is for the cost.

    Raises:
        TooLargeError: Above the limit without the flag.
    """
    _refuse_above(runs, MAX_RUNS, allow_large,
                  f"the spec expands to {runs:,} runs, above the limit of {MAX_RUNS:,}: up to "
                  f"{simulation_cost(horizon_s, runs)}; {_lift(True)}")


def mlp_parameters(inputs: int, hidden: Sequence[int], outputs: int, copies: int = 1) -> int:
    """Weights and biases of ``copies`` multilayer perceptrons, counted without building one."""
    widths = [int(inputs), *(int(h) for h in hidden), int(outputs)]
    return copies * sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


def check_policy(hidden: Sequence[int], *, allow_large: bool = False, spec: bool = False,
                 what: str = "the policy network") -> None:
    """:func:`check_parameters` for a policy with hidden layers ``hidden``, before it is built.

    Counted with one input and two outputs, the least a signal's policy has, so that no
    network passes that the built one would fail by much.

    Raises:
        TooLargeError: Above the limit without the flag.
    """
    check_parameters(mlp_parameters(1, hidden, 2), allow_large=allow_large, spec=spec,
                     what=f"{what} (hidden {list(hidden)})")


def check_parameters(parameters: int, *, allow_large: bool = False, spec: bool = False,
                     what: str = "the policy network") -> None:
    """Refuse a network of more than :data:`MAX_PARAMETERS` weights unless ``allow_large``.

    Raises:
        TooLargeError: Above the limit without the flag.
    """
    _refuse_above(parameters, MAX_PARAMETERS, allow_large,
                  f"{what} would have at least {parameters:,} parameters, above the limit of "
                  f"{MAX_PARAMETERS:,}: training it takes about "
                  f"{size(parameters * BYTES_PER_PARAMETER)} of memory ({BYTES_PER_PARAMETER} "
                  f"bytes a parameter); {_lift(spec)}")


def size(nbytes: float) -> str:
    """A number of bytes for a person: ``12.0 MB``, ``160.0 PB``."""
    for unit, scale in (("EB", 1e18), ("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if nbytes >= scale:
            return f"{nbytes / scale:,.1f} {unit}"
    return f"{nbytes:,.0f} bytes"
