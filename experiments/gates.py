"""CI gates on a sweep's summary: ``--fail-under 'max-pressure:delay_vs_fixed_pct<=-20'``.

A gate is ``[CONTROLLER:]METRIC OP NUMBER`` with OP one of ``<=``, ``<``, ``>=``, ``>``.
METRIC is a column of the summary (:data:`METRICS`); the gate holds for a controller
when its value satisfies the comparison on every network (and traffic cell) of the
sweep. Without a controller the gate applies to every controller, except that fixed
timing, the reference, is not gated on its own ``delay_vs_fixed_pct`` (always 0). A
controller with no finished run, or no value (NaN), misses the gate.
"""

from __future__ import annotations

import math
import operator
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.report import REFERENCE, panel_name

METRICS = (
    "mean_delay_s", "ci95_delay_s", "delay_vs_fixed_pct", "ci95_vs_fixed_pct",
    "mean_travel_time_s", "mean_waiting_time_s", "throughput_veh_h", "mean_queue_veh",
    "seeds", "failed",
)
"""The summary columns a gate can test."""
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt,
}
_GATE = re.compile(r"^\s*(?:(?P<controller>.+):)?\s*(?P<metric>[A-Za-z0-9_]+)\s*"
                   r"(?P<op><=|>=|<|>)\s*(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_RELATIVE = ("delay_vs_fixed_pct", "ci95_vs_fixed_pct")


class GateError(ValueError):
    """A gate that cannot be read; the message is one line."""


@dataclass(frozen=True)
class Gate:
    """One ``[CONTROLLER:]METRIC OP NUMBER`` condition."""

    metric: str
    """A summary column of :data:`METRICS`."""
    op: str
    """``<=``, ``<``, ``>=`` or ``>``."""
    threshold: float
    """The number the metric is compared with."""
    controller: str | None = None
    """The controller it applies to (its name, or its label with a training setting);
    None: every controller."""

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise GateError(f"gate: unknown metric {self.metric!r}; known: {', '.join(METRICS)}")
        if self.op not in OPERATORS:
            raise GateError(f"gate: unknown operator {self.op!r}; use <=, <, >= or >")
        if not math.isfinite(self.threshold):
            raise GateError(f"gate: the threshold must be a number, got {self.threshold}")

    @property
    def text(self) -> str:
        """The gate as written, normalised."""
        prefix = f"{self.controller}:" if self.controller else ""
        return f"{prefix}{self.metric}{self.op}{self.threshold:g}"

    def applies_to(self, controller: str, label: str) -> bool:
        """Whether a summary row (controller name, label) is gated."""
        if self.controller is not None:
            return self.controller in (controller, label)
        return not (controller == REFERENCE and self.metric in _RELATIVE)


def parse(text: str) -> Gate:
    """A gate from ``[CONTROLLER:]METRIC OP NUMBER``.

    Raises:
        GateError: The text does not follow that form, or names an unknown metric.
    """
    match = _GATE.match(text)
    if match is None:
        raise GateError(f"gate {text!r}: write [CONTROLLER:]METRIC OP NUMBER, e.g. "
                        "'max-pressure:delay_vs_fixed_pct<=-20' (OP: <=, <, >=, >)")
    controller = (match["controller"] or "").strip() or None
    try:
        return Gate(match["metric"], match["op"], float(match["value"]), controller)
    except GateError as err:
        raise GateError(f"{str(err).removeprefix('gate: ')} in gate {text!r}") from None


def check_controllers(gates: Iterable[Gate], controllers: Sequence[str],
                      labels: Sequence[str] = ()) -> None:
    """Refuse a gate naming a controller the sweep does not run (before it runs).

    Raises:
        GateError: Naming the gate and the controllers there are.
    """
    known = set(controllers) | set(labels)
    for gate in gates:
        if gate.controller is not None and gate.controller not in known:
            raise GateError(f"gate {gate.text!r}: the spec runs no controller "
                            f"{gate.controller!r}; it runs {', '.join(controllers)}")


@dataclass(frozen=True)
class Verdict:
    """One gate on one summary row."""

    gate: Gate
    network: str
    cell: str
    controller: str
    """The row's label (controller with its training setting)."""
    value: float
    passed: bool

    def line(self) -> str:
        """One line naming the controller, the network, the value and the condition."""
        value = "no value" if math.isnan(self.value) else f"{self.value:+.2f}" if (
            self.gate.metric in _RELATIVE) else f"{self.value:.2f}"
        state = "passed" if self.passed else "FAILED"
        return (f"gate {state}: {self.controller} on {panel_name(self.network, self.cell)}: "
                f"{self.gate.metric} = {value} (needs {self.gate.op} {self.gate.threshold:g})")

    def to_json(self) -> dict[str, Any]:
        """The verdict in a ``--json`` document: no value is ``null``."""
        return {"gate": self.gate.text, "network": self.network, "cell": self.cell,
                "controller": self.controller,
                "value": None if math.isnan(self.value) else self.value, "passed": self.passed}


def check(gates: Iterable[Gate], summary: pd.DataFrame) -> list[Verdict]:
    """Every gate on every summary row it applies to.

    A gate naming a controller that has no summary row gives one failed verdict for it.
    """
    verdicts = []
    for gate in gates:
        matched = False
        for row in summary.to_dict("records"):
            if not gate.applies_to(row["controller"], row["label"]):
                continue
            matched = True
            value = float(row[gate.metric])
            if gate.metric not in ("seeds", "failed") and row["seeds"] == 0:
                value = math.nan
            passed = not math.isnan(value) and OPERATORS[gate.op](value, gate.threshold)
            verdicts.append(Verdict(gate, row["network"], row["cell"], row["label"], value,
                                    passed))
        if not matched:
            verdicts.append(Verdict(gate, "-", "", gate.controller or "every controller",
                                    math.nan, False))
    return verdicts


def markdown(verdicts: Sequence[Verdict]) -> str:
    """The verdicts as a Markdown section."""
    if not verdicts:
        return ""
    failed = [v for v in verdicts if not v.passed]
    lines = ["## Gates", "",
             f"{len(verdicts) - len(failed)} of {len(verdicts)} passed." if failed
             else f"All {len(verdicts)} passed.", "",
             "| gate | network | controller | value | result |", "|---|---|---|---:|---|"]
    for v in verdicts:
        value = "—" if math.isnan(v.value) else f"{v.value:.2f}"
        lines.append(f"| `{v.gate.text}` | {panel_name(v.network, v.cell)} | {v.controller} | "
                     f"{value} | {'pass' if v.passed else '**FAIL**'} |")
    return "\n".join(lines) + "\n"


def append_step_summary(markdown_text: str) -> Path | None:
    """Append to the GitHub Actions job summary when ``GITHUB_STEP_SUMMARY`` is set."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    path = Path(target)
    with path.open("a") as fh:
        fh.write(markdown_text.rstrip() + "\n\n")
    return path
