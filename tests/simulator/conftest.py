"""Fixtures of the simulator tests: short scenarios, and things closed after each test."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

import networks
from networks import Scenario

HORIZON_S = 300
"""Simulated seconds of the short scenarios."""

T = TypeVar("T")


@pytest.fixture(scope="session")
def grid22(grid2x2_short: Scenario) -> Scenario:
    """Four signals, five simulated minutes."""
    return grid2x2_short


@pytest.fixture(scope="session")
def cologne1() -> Scenario:
    """cologne1's one signal, five simulated minutes."""
    return dataclasses.replace(networks.get("cologne1"), end=25200 + HORIZON_S)


@pytest.fixture
def closing() -> Iterator[Callable[[T], T]]:
    """Register simulations and environments to close after the test.

    libsumo runs one simulation per process, so one left open would break the next test.
    """
    made: list[Any] = []

    def keep(thing: T) -> T:
        made.append(thing)
        return thing

    yield keep
    for thing in made:
        thing.close()


@pytest.fixture
def seeds_drawn() -> Callable[[Any, int, int], set[int]]:
    """The SUMO seeds an environment used: reset with ``seed``, then ``more`` times without."""

    def draw(env: Any, seed: int, more: int) -> set[int]:
        env.reset(seed=seed)
        seeds = {env.sim.seed}
        for _ in range(more):
            env.reset()
            seeds.add(env.sim.seed)
        return seeds

    return draw
