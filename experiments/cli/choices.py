"""The options with a fixed set of values, as Enums so that ``--help`` lists the values.

Each Enum is made from the library's own tuple of names, so a name is defined once;
a command passes ``.value`` on to the library.
"""

from __future__ import annotations

import enum

from agents.names import ALGOS, BATCH_MODES, FORMATS, OPTIMIZERS, QUANTIZATIONS, SCHEDULES
from experiments.sweep import BACKENDS
from simulator.cleaning import CLEANINGS
from simulator.observations import OBSERVATIONS
from simulator.protocols import NAMES as PROTOCOLS
from simulator.rewards import REWARDS

# mypy cannot read members made from a tuple; the ignores say only that
Algo = enum.Enum("Algo", {n: n for n in ALGOS}, type=str)  # type: ignore[misc]
Optimizer = enum.Enum("Optimizer", {n: n for n in OPTIMIZERS}, type=str)  # type: ignore[misc]
Schedule = enum.Enum("Schedule", {n: n for n in SCHEDULES}, type=str)  # type: ignore[misc]
BatchMode = enum.Enum("BatchMode", {n: n for n in BATCH_MODES}, type=str)  # type: ignore[misc]
Observation = enum.Enum(  # type: ignore[misc]
    "Observation", {n: n for n in OBSERVATIONS}, type=str)
Reward = enum.Enum("Reward", {n: n for n in REWARDS}, type=str)  # type: ignore[misc]
Cleaning = enum.Enum("Cleaning", {n: n for n in CLEANINGS}, type=str)  # type: ignore[misc]
ExportFormat = enum.Enum("ExportFormat", {n: n for n in FORMATS}, type=str)  # type: ignore[misc]
Quantization = enum.Enum(  # type: ignore[misc]
    "Quantization", {n: n for n in QUANTIZATIONS}, type=str)
Backend = enum.Enum("Backend", {n: n for n in BACKENDS}, type=str)  # type: ignore[misc]
Protocol = enum.Enum("Protocol", {n: n for n in PROTOCOLS}, type=str)  # type: ignore[misc]
