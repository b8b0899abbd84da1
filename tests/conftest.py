"""Shared fixtures: tiny generated networks, built once per test session in a temporary cache.

Also the helpers several test modules share (``from tests.conftest import ...``): the check
of a command's one-line error, and a training run interrupted and resumed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pytest

from networks import Scenario
from networks.generators import grid

if TYPE_CHECKING:
    from experiments.train import TrainResult, TrainSpec


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


def assert_bad_input(result: Any, *words: str) -> None:
    """A CliRunner result of bad input: status 2 and one line on stderr that has ``words``."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], lines[0]


def curves(run: Path) -> pd.DataFrame:
    """A run's ``curves.csv`` without its wall-clock column (the one that differs run to run)."""
    return pd.read_csv(run / "curves.csv").drop(columns=["wall_s"])


def interrupted_and_resumed(spec: TrainSpec, scenario: Scenario, run: Path,
                            after: int = 2) -> TrainResult:
    """Train ``spec`` into ``run``, stopped by a crash after ``after`` episodes, then resumed."""
    from experiments.train import train

    def crash(row: dict) -> None:
        if row["episode"] == after - 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(spec, scenario, run, on_episode=crash)
    assert len(curves(run).query("kind == 'episode'")) == after
    return train(spec, scenario, run, resume=True)
