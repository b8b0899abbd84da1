"""Demand drawn anew per seed: the same profile, Poisson counts, cached files SUMO loads."""

from __future__ import annotations

import dataclasses
import gzip
import pickle
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import networks
from networks import demand
from networks.demand import Demand, DemandError, draw, profile, purpose, resample
from networks.scenario import Scenario
from networks.sumo_home import sumo_home


@pytest.fixture(scope="module")
def cologne1() -> Scenario:
    return networks.get("cologne1")


@pytest.fixture(scope="module")
def cologne1_profile(cologne1: Scenario) -> demand.Profile:
    return profile(cologne1)


def vehicles(path: Path) -> list[ET.Element]:
    return [e for e in ET.parse(path).getroot() if e.tag in ("vehicle", "trip")]


def test_the_profile_counts_every_trip_of_the_horizon(
    cologne1: Scenario, cologne1_profile: demand.Profile
) -> None:
    assert cologne1_profile.means.shape == (len(cologne1_profile.groups), 60)  # 1 min bins
    assert cologne1_profile.means.sum() == 2015
    assert demand.vehicles_due(cologne1) == 2015
    assert all(g.tag == "trip" and dict(g.attributes)["type"] == "pkw"
               for g in cologne1_profile.groups)


def test_a_seed_draws_the_same_file_every_time(cologne1: Scenario, tmp_path: Path) -> None:
    first = resample(cologne1, 3, cache_dir=tmp_path / "a")
    second = resample(cologne1, 3, cache_dir=tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    assert first.parent == tmp_path.resolve() / "a" / "demand" / "cologne1"


def test_seeds_draw_different_demand(cologne1: Scenario, tmp_path: Path) -> None:
    counts = [len(vehicles(resample(cologne1, seed, cache_dir=tmp_path))) for seed in range(3)]
    assert len(set(counts)) == 3, counts
    assert all(abs(n - 2015) < 4 * np.sqrt(2015) for n in counts)


def test_the_time_profile_is_kept(cologne1_profile: demand.Profile) -> None:
    edges = cologne1_profile.bin_edges()
    per_bin = np.array([np.histogram(draw(cologne1_profile, seed).depart, edges)[0]
                        for seed in range(20)])
    source = cologne1_profile.means.sum(axis=0)
    # Poisson: the mean of 20 draws is within 4 standard errors of the source's count
    assert np.all(np.abs(per_bin.mean(axis=0) - source) <= 4 * np.sqrt(source / 20) + 1)
    by_group = np.array([np.bincount(draw(cologne1_profile, seed).group,
                                     minlength=len(cologne1_profile.groups))
                         for seed in range(20)])
    assert np.allclose(by_group.mean(axis=0), cologne1_profile.means.sum(axis=1),
                       atol=1, rtol=0.25)


def test_scale_draws_more_vehicles(cologne1_profile: demand.Profile) -> None:
    base = cologne1_profile.means.sum()
    totals = [len(draw(cologne1_profile, seed, 1.2).depart) for seed in range(20)]
    assert abs(np.mean(totals) / base - 1.2) < 0.02


def test_departures_stay_in_their_bin_and_in_order(cologne1_profile: demand.Profile) -> None:
    drawn = draw(cologne1_profile, 7)
    assert np.all(np.diff(drawn.depart) >= 0)
    assert drawn.depart.min() >= 25200 and drawn.depart.max() < 28800
    assert np.allclose(drawn.depart, np.round(drawn.depart, 2))


def test_a_second_call_reads_the_cache(
    cologne1: Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = resample(cologne1, 5, 1.2, cache_dir=tmp_path)
    mtime = path.stat().st_mtime_ns

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached draw was drawn again")

    monkeypatch.setattr(demand, "profile", refuse)
    assert resample(cologne1, 5, 1.2, cache_dir=tmp_path) == path
    assert path.stat().st_mtime_ns == mtime
    # another seed, scale or source is another file
    monkeypatch.undo()
    assert resample(cologne1, 5, 1.0, cache_dir=tmp_path) != path
    assert resample(cologne1, 6, 1.2, cache_dir=tmp_path) != path
    shorter = dataclasses.replace(cologne1, end=cologne1.end - 600)
    assert resample(shorter, 5, 1.2, cache_dir=tmp_path) != path


def test_the_cache_folder_is_the_networks_one(cologne1: Scenario) -> None:
    # conftest points GREENPHASE_CACHE at a temporary folder
    path = resample(cologne1, 0)
    assert path.is_relative_to(networks.generators.default_cache_dir().resolve())


def test_sumo_loads_every_vehicle_of_a_draw(cologne1: Scenario, tmp_path: Path) -> None:
    path = resample(cologne1, 1, cache_dir=tmp_path)
    cmd = [str(sumo_home() / "bin" / "sumo"), "-n", str(cologne1.net_file), "-r", str(path),
           "-b", str(cologne1.begin), "-e", str(cologne1.begin + 300), "--no-step-log", "true",
           "--duration-log.statistics", "true", "--error-log", str(tmp_path / "errors.txt")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "errors.txt").read_text().strip() == ""
    assert "Loaded:" in done.stdout


ROUTES = """<?xml version="1.0" encoding="UTF-8"?>
<routes>
    <vType id="car" accel="2.6"/>
    <vType id="bus" vClass="bus"/>
    <route id="ns" edges="a b"/>
    <vehicle id="x1" type="car" route="ns" depart="10" departLane="best" departSpeed="max"/>
    <vehicle id="x2" type="car" route="ns" depart="20" departLane="best" departSpeed="max"/>
    <vehicle id="x3" type="bus" depart="30" departPos="random_free" arrival="99">
        <route edges="c d"/>
        <stop lane="d_0" duration="20"/>
    </vehicle>
    <trip id="t1" type="car" depart="400" from="a" to="d"/>
    <trip id="late" type="car" depart="900" from="a" to="d"/>
    <trip id="early" type="car" depart="-5" from="a" to="d"/>
    <flow id="f" route="ns" begin="0" end="600" vehsPerHour="360" departLane="free"/>
    <flow id="g" from="a" to="b" begin="0" end="600" probability="0.05"/>
    <person id="p" depart="50"><walk edges="a b"/></person>
</routes>
"""


@pytest.fixture
def handmade(tmp_path: Path) -> Scenario:
    routes = tmp_path / "handmade.rou.xml"
    routes.write_text(ROUTES, encoding="utf-8")
    return Scenario("handmade", tmp_path / "none.net.xml", (routes,), 0, 600)


def test_vehicles_keep_what_they_are(handmade: Scenario, tmp_path: Path) -> None:
    source = profile(handmade, 300)
    assert source.means.shape == (5, 2)
    # x1 and x2 are one group; the flows count what they are expected to insert
    assert source.means.sum(axis=1).tolist() == [2, 1, 1, 60, 30]
    path = resample(handmade, 0, 4.0, cache_dir=tmp_path)
    root = ET.parse(path).getroot()
    assert [e.get("id") for e in root if e.tag in ("vType", "route")] == ["car", "bus", "ns"]
    drawn = vehicles(path)
    ids = [v.get("id") for v in drawn]
    assert len(ids) == len(set(ids))
    departs = [float(v.get("depart", "nan")) for v in drawn]
    assert departs == sorted(departs) and 0 <= min(departs) and max(departs) < 600
    routed = [v for v in drawn if v.get("route") == "ns" and v.get("departSpeed") == "max"]
    assert routed and all(v.get("departLane") == "best" and v.get("type") == "car"
                          for v in routed)
    buses = [v for v in drawn if v.get("type") == "bus"]
    assert buses and all(v.get("departPos") == "random_free" and v.get("arrival") is None
                         and [c.tag for c in v] == ["route", "stop"] for v in buses)
    from_flow = [v for v in drawn if v.get("departLane") == "free"]
    assert from_flow and all(v.tag == "vehicle" and v.get("vehsPerHour") is None
                             for v in from_flow)
    assert [v.tag for v in drawn if v.get("to") == "b"] == ["trip"] * sum(
        v.get("to") == "b" for v in drawn)
    assert [e.get("id") for e in root if e.tag == "person"] == ["p"]


def test_a_gzipped_route_file_is_read(handmade: Scenario, tmp_path: Path) -> None:
    packed = tmp_path / "handmade.rou.xml.gz"
    packed.write_bytes(gzip.compress(ROUTES.encode()))
    zipped = dataclasses.replace(handmade, route_files=(packed,))
    assert np.array_equal(profile(zipped).means, profile(handmade).means)


def test_a_file_that_is_no_route_file_is_one_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.rou.xml"
    bad.write_text("<net/>", encoding="utf-8")
    scenario = Scenario("bad", tmp_path / "none.net.xml", (bad,), 0, 600)
    with pytest.raises(networks.NetworkError, match="not a route file"):
        resample(scenario, 0, cache_dir=tmp_path)
    bad.write_text("<routes><trip", encoding="utf-8")
    with pytest.raises(networks.NetworkError, match="malformed"):
        resample(scenario, 0, cache_dir=tmp_path)


# ----------------------------------------------------------------- seed split


def test_seeds_are_split_by_purpose() -> None:
    from experiments.train import TrainSpec, training_seed

    assert [purpose(s) for s in (0, 99, 9_999)] == ["evaluation"] * 3
    assert [purpose(s) for s in (10_000, 99_999)] == ["tuning"] * 2
    assert [purpose(s) for s in (100_000, 2**31 - 1)] == ["training"] * 2
    # the training loop's seeds: checkpoint selection is tuning, episodes are training
    spec = TrainSpec()
    assert purpose(spec.eval_seed) == "tuning"
    assert purpose(training_seed(spec, 0)) == "training"
    for bad in (-1, 2**31):
        with pytest.raises(DemandError, match="seed"):
            purpose(bad)


def test_no_evaluation_draw_is_a_tuning_or_training_draw(
    cologne1_profile: demand.Profile,
) -> None:
    def digests(seeds: range) -> set[str]:
        return {draw(cologne1_profile, seed).digest() for seed in seeds}

    evaluation = digests(range(100))
    held = digests(range(10_000, 10_100)) | digests(range(100_000, 100_100))
    assert len(evaluation) == 100 and len(held) == 200
    assert not evaluation & held


# --------------------------------------------------------------------- Demand


def test_demand_text() -> None:
    assert Demand.parse("fixed") == Demand()
    assert Demand.parse("resample,scale=1.2") == Demand(mode="resample", scale=1.2)
    assert Demand.parse(" scale = 1.2 ") == Demand(scale=1.2)
    assert Demand.parse("scale=1.2", mode="resample") == Demand(mode="resample", scale=1.2)
    assert Demand.parse("mode=resample") == Demand(mode="resample")
    assert str(Demand(mode="resample", scale=1.2)) == "resample,scale=1.2"
    assert Demand.parse("resample,bin_s=120").bin_s == 120
    for value in (Demand(mode="resample"), Demand(scale=1.23456789),
                  Demand(mode="resample", scale=0.5, bin_s=120)):
        assert Demand.parse(str(value)) == value
    assert Demand(mode="resample", scale=1.2).model_dump() == {"mode": "resample", "scale": 1.2,
                                                               "bin_s": 60}
    assert pickle.loads(pickle.dumps(Demand(mode="resample"))) == Demand(mode="resample")


@pytest.mark.parametrize(("text", "words"), [
    ("", ("empty",)),
    ("bogus", ("bogus", "fixed or resample")),
    ("resample,scale=0", ("scale", "greater than 0")),
    ("scale=-1.5", ("scale",)),
    ("scale=inf", ("scale", "finite")),
    ("scale=lots", ("scale",)),
    ("resample,fixed", ("twice",)),
    ("speed=2", ("speed",)),
    ("resample,bin_s=0", ("bin_s", "greater than or equal to 1")),
    ("resample,bin_s=1.5", ("bin_s",)),
])
def test_bad_demand_text_is_one_line(text: str, words: tuple[str, ...]) -> None:
    with pytest.raises(DemandError) as caught:
        Demand.parse(text)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert len(message.splitlines()) == 1 and message.startswith("demand: ")
    for word in words:
        assert word in message


def test_fixed_demand_is_the_route_files(cologne1: Scenario) -> None:
    assert Demand().route_files(cologne1, 3) == cologne1.route_files
    assert Demand(scale=1.2).sumo_arguments() == ("--scale", "1.2")
    assert Demand().sumo_arguments() == ()
    resampled = Demand(mode="resample", scale=1.2)
    assert resampled.sumo_arguments() == ()
    assert resampled.route_files(cologne1, 3) == (resample(cologne1, 3, 1.2),)
    coarser = Demand(mode="resample", bin_s=300).route_files(cologne1, 3)
    assert coarser == (resample(cologne1, 3, bin_s=300),) and coarser != resampled.route_files(
        cologne1, 3)


def test_bad_seed_or_scale_of_a_draw(cologne1: Scenario, tmp_path: Path) -> None:
    with pytest.raises(DemandError, match="seed"):
        resample(cologne1, -1, cache_dir=tmp_path)
    with pytest.raises(DemandError, match="scale"):
        resample(cologne1, 0, 0.0, cache_dir=tmp_path)


def test_a_changed_route_file_is_drawn_anew(handmade: Scenario, tmp_path: Path) -> None:
    before = resample(handmade, 0, cache_dir=tmp_path)
    source = handmade.route_files[0]
    source.write_text(ROUTES.replace('depart="400"', 'depart="401"'), encoding="utf-8")
    after = resample(handmade, 0, cache_dir=tmp_path)
    assert after != before and before.is_file()
    source.unlink()
    with pytest.raises(networks.NetworkError, match="route file not found"):
        resample(handmade, 0, cache_dir=tmp_path)
