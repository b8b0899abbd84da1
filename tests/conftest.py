"""Shared fixtures: tiny generated networks, built once per test session in a temporary cache."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from networks import Scenario
from networks.generators import grid


@pytest.fixture(scope="session")
def grid_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("greenphase-cache")


@pytest.fixture(scope="session")
def grid1x1(grid_cache: Path) -> Scenario:
    """One signalised four-arm crossing with an hour of demand."""
    return grid(1, 1, cache_dir=grid_cache)


@pytest.fixture(scope="session")
def grid2x2_short(grid_cache: Path) -> Scenario:
    """Four signals, five simulated minutes."""
    return dataclasses.replace(grid(2, 2, cache_dir=grid_cache), end=300)


@pytest.fixture(scope="session", autouse=True)
def private_cache(grid_cache: Path) -> Iterator[None]:
    """Generated grids and Webster plans go to a temporary cache, never the user's."""
    mp = pytest.MonkeyPatch()
    mp.setenv("GREENPHASE_CACHE", str(grid_cache))
    yield
    mp.undo()
