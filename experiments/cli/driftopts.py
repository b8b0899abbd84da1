"""The options of the commands that run a drifting scenario: ``--drift`` and ``--hours``.

A command declares ``drift: DriftOpt = ""`` and ``hours: HoursOpt = DEFAULT_HOURS`` and
turns them, with its scenario and options, into the long scenario with
:func:`drift_setup`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from experiments.cli.common import positive
from experiments.limits import TooLargeError, check_horizon
from experiments.options import BadInput
from networks import Scenario
from networks.drift import KINDS, Drift
from simulator.options import SimulationOptions

DEFAULT_HOURS = 8.0
"""Simulated hours of a drifting run when ``--hours`` is not given."""

DriftOpt = Annotated[str, typer.Option(
    "--drift", help="Changes over the horizon, KIND=VALUE@WHEN separated by commas, times "
                    "from the begin (90s, 15m, 2h, 1h30m): e.g. 'growth=+30%@2h,"
                    "closure=EDGE@3h-4h,surge=EDGE+600@5h-5h30m,od-shift=20%@2h,"
                    f"sensor-aging=dropout:0.2@2h-6h'; kinds: {', '.join(KINDS)}. "
                    "Default: none (the base demand repeated).")]
HoursOpt = Annotated[float, typer.Option(
    "--hours", callback=positive, help="Simulated hours, the base demand repeated period "
                                       "after period (fractions allowed; over 24 needs "
                                       "--allow-large).")]


def drift_setup(scenario: Scenario, drift_text: str, hours: float,
                options: SimulationOptions, *, allow_large: bool = False,
                runs: int = 1) -> tuple[Scenario, SimulationOptions]:
    """The long scenario of ``--drift`` over ``--hours``, and ``options`` that run it.

    Args:
        scenario: The base scenario, whose horizon is the period the demand repeats.
        drift_text: ``--drift`` (empty: stationary).
        hours: ``--hours``.
        options: The command's simulation options; the drift is added to them.
        allow_large: ``--allow-large`` was given (a horizon over a day).
        runs: Runs of that horizon the command would make, for the cost in the message.

    Raises:
        BadInput: ``--hours`` above the limit of :mod:`experiments.limits`.
        networks.drift.DriftError: A drift that cannot be read or does not fit the
            scenario (a ``NetworkError``: one line, exit status 2).
    """
    try:
        check_horizon(hours * 3600, runs=runs, allow_large=allow_large)
    except TooLargeError as err:
        raise BadInput(f"--hours: {err}") from None
    drift = Drift.parse(drift_text, hours=hours).check(scenario)
    return drift.scenario(scenario), options.model_copy(update={"drift": drift})
