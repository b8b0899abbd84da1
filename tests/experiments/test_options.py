"""Command-line values into library objects, and the progress bars fed by the pipelines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from experiments.options import (
    BadInput,
    ScenarioOptions,
    default_folder,
    dropout_rates,
    federated_settings,
    int_list,
    sensor_options,
)
from experiments.progress import CompareBar, SweepBar
from networks import Scenario


def test_scenario_options_name_a_network_a_net_or_none(grid1x1: Scenario) -> None:
    assert ScenarioOptions().scenario_if_named() is None
    assert ScenarioOptions(begin=10).scenario_if_named() is None
    assert ScenarioOptions().scenario(default="grid-1x1").name == "grid-1x1"
    own = ScenarioOptions(net=grid1x1.net_file, routes=list(grid1x1.route_files), end=120)
    scenario = own.scenario(default="cologne8")  # a net of one's own wins over the default
    assert (scenario.net_file, scenario.end) == (grid1x1.net_file, 120)
    assert own.scenario_if_named() == scenario
    with pytest.raises(BadInput, match="--routes needs --net"):
        ScenarioOptions(routes=list(grid1x1.route_files)).scenario()
    with pytest.raises(BadInput, match="not both"):
        ScenarioOptions(network="grid-1x1", net=grid1x1.net_file).scenario()


def test_lists_and_sensor_options() -> None:
    assert int_list("64, 32,", "--hidden") == (64, 32)
    assert dropout_rates("0,0.5") == [0.0, 0.5]
    for bad in ("", "a,b"):
        with pytest.raises(BadInput, match="--hidden"):
            int_list(bad, "--hidden")
    with pytest.raises(BadInput, match=r"\[0, 1\)"):
        dropout_rates("0,1")
    faults, cleaning = sensor_options("dropout=0.2", "last")
    assert (faults.dropout, cleaning) == (0.2, "last")
    with pytest.raises(BadInput, match="--cleaning"):
        sensor_options("", "mop")


def test_federated_settings() -> None:
    assert federated_settings(False, None, None, None, None) == {"episodes": 100,
                                                                 "federated": None}
    settings = federated_settings(True, None, 2, 3, None)
    assert settings["episodes"] == 6 and settings["federated"].local_episodes == 2
    with pytest.raises(BadInput, match="need --federated"):
        federated_settings(False, None, None, 2, None)
    with pytest.raises(BadInput, match="--episodes 5"):
        federated_settings(True, 5, 2, 2, None)


def test_default_folder_is_stamped() -> None:
    folder = default_folder("compare", "cologne1")
    assert folder.parent == Path("runs")
    assert re.fullmatch(r"compare-cologne1-\d{8}-\d{6}", folder.name)


def test_compare_bar_counts_runs_by_their_last_step(grid1x1: Scenario) -> None:
    scenario = Scenario(grid1x1.name, grid1x1.net_file, grid1x1.route_files, 0, 20)
    with CompareBar(scenario, runs=2, decision_interval=5.0) as bar:
        for t in (5.0, 10.0, 15.0, 20.0):
            bar.on_step("fixed", 0, t)
        tasks = bar.progress.tasks
        assert (tasks[0].completed, tasks[0].total) == (1, 2)
        assert (tasks[1].completed, tasks[1].total) == (4, 4)
        assert tasks[1].description == "  fixed seed 0"


def test_sweep_bar_counts_done_failed_and_retried() -> None:
    class Unit:
        network, label, seed = "grid-1x1", "fixed", 0

    with SweepBar("sweep", "smoke") as bar:
        bar.on_start(4, 1)
        bar.on_result(Unit(), {"status": "ok"}, False)
        bar.on_result(Unit(), {"status": "failed", "attempt": 1, "error": "boom"}, True)
        bar.on_result(Unit(), {"status": "failed", "attempt": 2, "error": "boom"}, False)
        task = bar.progress.tasks[0]
        assert (task.completed, task.total) == (3, 4)
        assert task.description == "sweep smoke: 1 done, 1 failed, 1 retried"
