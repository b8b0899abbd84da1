"""Drift in the simulation: long runs, closures in SUMO, aged sensors; no drift, no change."""

from __future__ import annotations

import math
import pickle
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Annotated

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from experiments.cli.common import OneLineErrors, user_errors
from experiments.cli.driftopts import DEFAULT_HOURS, DriftOpt, HoursOpt, drift_setup
from experiments.options import BadInput
from experiments.runner import run_episode
from experiments.spec import Experiment, RunUnit
from experiments.train import TrainSpec
from networks import Scenario
from networks.drift import Drift, DriftError
from simulator.core import TrafficSimulation
from simulator.faults import FIELDS, FaultySensors
from simulator.options import SimulationOptions
from simulator.sensors import Detectors, Readings
from tests.conftest import assert_bad_input
from tests.networks.test_drift import routed


def test_run_hashes_and_dumps_without_drift_are_as_before() -> None:
    # the literals were computed before SimulationOptions had a drift field
    exp = Experiment(network="cologne1", controllers=["max-pressure", "dqn"], seeds=1,
                     horizon_s=600, sensors={"faults": "dropout=0.1"},
                     demand={"mode": "resample", "scale": 1.1}).resolved()
    assert RunUnit(exp, "max-pressure", 3).hash == \
        "f5ef3d115783f7cf281e01e62ee8b8aa4f999ac3d7ec2e41274aa04d5c9141f0"
    assert RunUnit(exp, "dqn", 3).hash == \
        "1699ee3f3dff9bf9e6e2626449477440a7e9445a43c57b0d4e4e7d10427b207e"
    assert SimulationOptions().model_dump_json() == (
        '{"decision_interval":5.0,"min_green":5.0,"max_green":50.0,"yellow":null,'
        '"all_red":null,"time_to_teleport":-1.0,"detector_length":null,"first_wait":false,'
        '"faults":"","cleaning":"none","demand":{"mode":"fixed","scale":1.0,"bin_s":60},'
        '"sumo_args":[],"protocol":"greenphase"}')
    assert "drift" not in TrainSpec().to_dict()["simulation"]


def test_options_carry_a_drift_whole(grid2x2_short: Scenario) -> None:
    drift = Drift.parse("growth=+10%@5m,closure=A0B0@5m", hours=0.25).check(grid2x2_short)
    options = SimulationOptions(drift=drift, demand="resample")
    dumped = options.model_dump()
    assert dumped["drift"] == {"text": drift.text, "hours": 0.25, "period_s": 300}
    assert SimulationOptions.model_validate(dumped) == options
    assert SimulationOptions.of(options, decision_interval=10).drift == drift
    assert pickle.loads(pickle.dumps(options)) == options and hash(options) == hash(
        SimulationOptions(drift=drift, demand="resample"))
    assert SimulationOptions.of(options, drift=None).model_dump() == \
        SimulationOptions(demand="resample").model_dump()


def test_no_drift_keeps_the_sumo_command(grid2x2_short: Scenario, closing) -> None:
    sim = closing(TrafficSimulation(grid2x2_short, isolate=False))
    cmd = sim.sumo_command(0)
    assert cmd[cmd.index("-r") + 1] == str(grid2x2_short.route_files[0])
    assert cmd[cmd.index("-a") + 1].count(",") == 0  # the detectors only


def test_a_closure_is_a_rerouter_on_every_edge(grid2x2_short: Scenario, closing) -> None:
    drift = Drift.parse("closure=A0B0@5m-10m", hours=0.25).check(grid2x2_short)
    long = drift.scenario(grid2x2_short)
    sim = closing(TrafficSimulation(long, SimulationOptions(drift=drift), isolate=False))
    cmd = sim.sumo_command(0)
    additional = cmd[cmd.index("-a") + 1].split(",")
    assert len(additional) == 2 and additional[1].endswith("closures.add.xml")
    rerouter = ET.parse(additional[1]).getroot().find("rerouter")
    assert rerouter is not None and len(rerouter.get("edges", "").split()) == 24
    interval = rerouter.find("interval")
    assert interval is not None and (interval.get("begin"), interval.get("end")) == \
        ("300.00", "600.00")
    closed = interval.find("closingReroute")
    assert closed is not None and closed.attrib == {"id": "A0B0", "disallow": "all"}
    assert cmd[cmd.index("-e") + 1] == "900"


def test_a_stationary_long_horizon_runs_and_repeats(grid2x2_short: Scenario) -> None:
    drift = Drift.parse("", hours=0.25).check(grid2x2_short)
    long = drift.scenario(grid2x2_short)
    options = SimulationOptions(drift=drift, demand="resample")
    first = run_episode(long, "fixed", 0, options)
    again = run_episode(long, "fixed", 0, options)
    short = run_episode(grid2x2_short, "fixed", 0, SimulationOptions(demand="resample"))
    assert first.kpis == again.kpis
    assert first.kpis["vehicles"] > 2.5 * short.kpis["vehicles"]
    assert math.isfinite(first.kpis["mean_delay_s"]) and first.trips["depart_s"].max() > 600


def test_a_closure_changes_the_run_and_ends(grid2x2_short: Scenario) -> None:
    drift = Drift.parse("", hours=0.25).check(grid2x2_short)
    closed = Drift.parse("closure=A0B0@2m", hours=0.25).check(grid2x2_short)
    long = drift.scenario(grid2x2_short)
    still = run_episode(long, "fixed", 1, SimulationOptions(drift=drift, demand="resample"))
    shut = run_episode(long, "fixed", 1, SimulationOptions(drift=closed, demand="resample"))
    assert shut.kpis["vehicles"] == still.kpis["vehicles"]
    assert shut.kpis != still.kpis
    assert shut.kpis["unfinished"] < 0.2 * shut.kpis["vehicles"]  # no gridlock


def _detectors(n: int = 30) -> Detectors:
    return Detectors(tuple(f"d{i}" for i in range(n)), tuple(f"l{i}" for i in range(n)),
                     np.full(n, 100.0), np.full(n, 13.9), np.arange(n) < n - 5)


def _seen(model: FaultySensors, steps: int = 200, begin: float = 1000.0) -> np.ndarray:
    det = _detectors()
    model.reset(det, 3)
    n = len(det.ids)
    out = []
    for step in range(steps):
        value = 1.0 + step + np.arange(n)
        seen = model.observe(Readings(begin + 5.0 * step, value, np.full(n, 40.0),
                                      np.full(n, 9.0), value, np.zeros(n)))
        out.append(np.stack([getattr(seen, f) for f in FIELDS]))
    return np.array(out)


def test_aging_raises_fault_rates_over_time_and_nothing_else() -> None:
    plain = _seen(FaultySensors("dropout=0.1,noise=0.05,failure=0.1"))
    assert np.array_equal(plain, _seen(FaultySensors("dropout=0.1,noise=0.05,failure=0.1",
                                                     aging=[(0, 0, {"dropout": 0.1})])),
                          equal_nan=True)  # the same rates: the same draws
    aged = FaultySensors("dropout=0.1", aging=[(250.0, 750.0, {"dropout": 0.9,
                                                                "failure": 0.5})])
    assert aged.rates_at(500).dropout == pytest.approx(0.5)
    assert aged.rates_at(100).failure == 0 and aged.rates_at(900).failure == 0.5
    missing = np.isnan(_seen(aged)[:, 3]).mean(axis=1)  # time measured from the first reading
    assert missing[:40].mean() < 0.2 and missing[160:].mean() > 0.9
    dead = np.isnan(_seen(aged)[160:, 3]).all(axis=0).sum()
    assert dead >= 15  # half of 30 sensors, dead for good


def test_options_age_the_sensors_of_a_drift(grid2x2_short: Scenario) -> None:
    drift = Drift.parse("sensor-aging=dropout:0.5@1m-3m", hours=0.1).check(grid2x2_short)
    model = SimulationOptions(drift=drift).sensor_model()
    assert isinstance(model, FaultySensors) and model.aging == ((60.0, 180.0,
                                                                 {"dropout": 0.5}),)
    cleaned = SimulationOptions(drift=drift, cleaning="last").sensor_model()
    assert type(cleaned).__name__ == "CleanedSensors"
    assert type(SimulationOptions().sensor_model()).__name__ == "SensorModel"


def test_drift_setup_makes_the_long_scenario(grid2x2_short: Scenario) -> None:
    long, options = drift_setup(grid2x2_short, "growth=+20%@5m", 0.25,
                                SimulationOptions(demand="resample"))
    assert (long.begin, long.end) == (0, 900) and options.drift is not None
    assert options.drift.period_s == 300 and options.demand.mode == "resample"
    with pytest.raises(BadInput, match="--hours: a horizon of 25.0 simulated hours .*"
                                       "--allow-large"):
        drift_setup(grid2x2_short, "", 25, SimulationOptions())
    with pytest.raises(DriftError, match="no edge 'Z'"):
        drift_setup(grid2x2_short, "closure=Z@1h", 25, SimulationOptions(), allow_large=True)


def _app(scenario: Scenario) -> typer.Typer:
    app = typer.Typer(cls=OneLineErrors)

    @app.command()
    def run(drift: DriftOpt = "", hours: HoursOpt = DEFAULT_HOURS,
            allow: Annotated[bool, typer.Option("--allow-large")] = False) -> None:
        with user_errors():
            long, _ = drift_setup(scenario, drift, hours, SimulationOptions(), allow_large=allow)
        typer.echo(f"{long.begin} {long.end}")

    @app.command()
    def other() -> None:  # a group of two, as the CLI is, so the command is named
        """Nothing."""

    return app


@pytest.mark.parametrize(("args", "words"), [
    (["--drift", "growth=+30%@9h", "--hours", "8"], ("error: drift:", "starts at 9h")),
    (["--drift", "closure=nowhere@1h"], ("error: drift:", "no edge 'nowhere'")),
    (["--drift", "flood=+1%@1h"], ("unknown kind 'flood'",)),
    (["--hours", "30"], ("--hours", "--allow-large")),
    (["--hours", "0"], ("--hours", "greater than 0")),
])
def test_the_options_give_one_line_errors(grid2x2_short: Scenario, args: list[str],
                                          words: tuple[str, ...]) -> None:
    result = CliRunner().invoke(_app(grid2x2_short), ["run", *args])
    assert_bad_input(result, *words)


def test_the_options_default_to_eight_stationary_hours(grid2x2_short: Scenario) -> None:
    result = CliRunner().invoke(_app(grid2x2_short), ["run"])
    assert result.exit_code == 0 and result.stdout.split() == ["0", str(8 * 3600)]


def test_routed_vehicles_go_around_a_closure_in_sumo(grid2x2_short: Scenario,
                                                      tmp_path: Path) -> None:
    scenario = routed(grid2x2_short, tmp_path)
    drift = Drift.parse("closure=A0B0@1m-2m", hours=600 / 3600).check(scenario)
    result = run_episode(drift.scenario(scenario), "fixed", 0, SimulationOptions(drift=drift))
    assert result.kpis["vehicles"] == 120 and result.kpis["not_inserted"] == 0
    trips = result.trips
    assert trips.loc[trips["depart_s"] < 450, "arrived"].all()  # none stuck at the closure


def test_the_simulation_ages_its_sensors_on_the_clock(grid2x2_short: Scenario, closing) -> None:
    drift = Drift.parse("sensor-aging=dropout:0.95@2m-3m", hours=0.1).check(grid2x2_short)
    sim = closing(TrafficSimulation(drift.scenario(grid2x2_short), SimulationOptions(
        drift=drift, demand="resample"), program="static", isolate=False))
    seen = [sim.start(0)]
    while not sim.done:
        seen.append(sim.step(None))
    missing = {r.time: np.isnan(r.count).mean() for r in seen}
    assert max(m for t, m in missing.items() if t < 120) == 0
    assert min(m for t, m in missing.items() if t >= 180) > 0.8
    assert np.isnan(sim.true_readings.count).sum() == 0  # the truth stays whole
