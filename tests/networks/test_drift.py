"""Drift specs: parsing, one-line errors, the long horizon's demand and its changes."""

from __future__ import annotations

import dataclasses
import pickle
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import networks
from networks import NetworkError, Scenario
from networks.demand import Demand
from networks.drift import Drift, DriftError, duration, seconds
from networks.drift_demand import route_file

RESAMPLE = Demand(mode="resample")


def _trips(path: Path) -> list[ET.Element]:
    return [e for e in ET.parse(path).getroot() if e.tag in ("trip", "vehicle")]


@pytest.fixture(scope="module")
def base(grid2x2_short: Scenario) -> Scenario:
    """Four signals; the demand period is five minutes."""
    return grid2x2_short


def test_times_read_and_write_in_hours_minutes_and_seconds() -> None:
    assert [seconds(t) for t in ("90s", "15m", "2h", "1h30m", "45", "0.5h")] == \
        [90, 900, 7200, 5400, 45, 1800]
    assert [duration(s) for s in (90, 7200, 5400, 0, 2.5)] == ["1m30s", "2h", "1h30m", "0",
                                                                "2.5s"]


def test_a_spec_is_read_into_changes_and_written_canonically() -> None:
    drift = Drift.parse(" growth=30%@2h-4h , closure=E1@3h,surge=E2+600@5h-5h30m,"
                        "od-shift=20.0%@120m,sensor-aging=dropout:0.2+noise:0.1@2h-6h", hours=8)
    assert drift.text == ("growth=+30%@2h-4h,closure=E1@3h,surge=E2+600@5h-5h30m,"
                          "od-shift=20%@2h,sensor-aging=dropout:0.2+noise:0.1@2h-6h")
    assert [c.kind for c in drift.changes] == ["growth", "closure", "surge", "od-shift",
                                               "sensor-aging"]
    assert drift.growth(3 * 3600) == pytest.approx(1.15) and drift.growth(5 * 3600) == 1.3
    assert drift.growth(3600) == 1.0 and drift.shifted_share(7200) == pytest.approx(0.2)
    assert drift.aging == ((7200.0, 21600.0, {"dropout": 0.2, "noise": 0.1}),)
    assert drift.change_points() == [
        (7200.0, "growth +30%"), (7200.0, "od-shift 20%"),
        (7200.0, "sensor-aging dropout:0.2+noise:0.1"), (10800.0, "closure E1"),
        (18000.0, "surge E2+600"), (19800.0, "surge E2+600 ends")]
    again = Drift.model_validate(drift.model_dump())
    assert again == drift and pickle.loads(pickle.dumps(drift)) == drift
    assert hash(again) == hash(drift) and again.changes == drift.changes
    assert "period_s" not in drift.model_dump()  # unbound: nothing TOML cannot write
    assert str(Drift.parse("", hours=0.5)) == "stationary"
    assert Drift.parse("", hours=0.5).horizon_s == 1800


@pytest.mark.parametrize(("text", "hours", "words"), [
    ("grow=+30%@2h", 8, ("unknown kind 'grow'", "growth, od-shift")),
    ("growth=30@2h", 8, ("percentage", "'30'")),
    ("growth=-100%@2h", 8, ("above 0",)),
    ("od-shift=120%@2h", 8, ("at most 100%",)),
    ("surge=E+fast@2h", 8, ("EDGE+VEHICLES_PER_HOUR",)),
    ("sensor-aging=dropout:1.5@2h", 8, ("dropout", "[0, 1)")),
    ("sensor-aging=rust:0.1@2h", 8, ("faults: noise, dropout, stuck, failure",)),
    ("growth=+30%@2x", 8, ("'growth=+30%@2x'", "time '2x'")),
    ("growth=+30%", 8, ("is not KIND=VALUE@WHEN",)),
    ("growth=+30%@9h", 8, ("starts at 9h", "horizon of 8 h")),
    ("closure=E@7h-9h", 8, ("ends at 9h", "horizon of 8 h")),
    ("closure=E@4h-3h", 8, ("ends at 3h", "not after its start 4h")),
    ("", 0, ("hours must be a number above 0",)),
    ("", float("nan"), ("hours must be a number above 0",)),
])
def test_a_bad_spec_is_one_drift_error(text: str, hours: float, words: tuple[str, ...]) -> None:
    with pytest.raises(DriftError) as caught:
        Drift.parse(text, hours=hours)
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and message.startswith("drift: ")
    assert isinstance(caught.value, NetworkError)  # the command line's exit status 2
    for word in words:
        assert word in message, message


def test_check_binds_the_base_and_names_an_unknown_edge(base: Scenario) -> None:
    drift = Drift.parse("closure=A0B0@2m", hours=0.25)
    bound = drift.check(base)
    assert bound.period_s == 300 and drift.period_s is None
    assert bound.check(base) is bound
    long = bound.scenario(base)
    assert (long.name, long.net_file, long.route_files) == (base.name, base.net_file,
                                                             base.route_files)
    assert (long.begin, long.end) == (base.begin, base.begin + 900)
    with pytest.raises(DriftError, match=r"no edge 'nope' in grid-2x2's net \(edges: A0A1, "):
        Drift.parse("closure=nope@1m", hours=0.25).check(base)
    with pytest.raises(DriftError, match="traffic enters the network on 'left0A0'"):
        Drift.parse("closure=left0A0@1m", hours=0.25).check(base)
    with pytest.raises(DriftError, match="traffic leaves the network on 'A0left0'"):
        Drift.parse("closure=A0left0@1m", hours=0.25).check(base)
    with pytest.raises(DriftError, match="no edge 'X'"):
        Drift.parse("surge=X+100@1m", hours=0.25).check(base)
    other = dataclasses.replace(base, end=600)
    with pytest.raises(DriftError, match="bound to a base of 300 s"):
        bound.check(other)
    with pytest.raises(DriftError, match="not bound"):
        drift.at(60)


def test_at_is_the_conditions_then_as_a_stationary_period(base: Scenario) -> None:
    drift = Drift.parse("growth=+40%@2m-4m,closure=A0B0@5m-10m,surge=B0A0+100@1m-2m,"
                        "sensor-aging=dropout:0.4@0-10m", hours=0.25).check(base)
    now = drift.at(180)
    assert (now.hours, now.period_s) == (300 / 3600, 300)
    assert now.text == "growth=+20%@0,sensor-aging=dropout:0.12@0"
    assert drift.at(6 * 60).text == "growth=+40%@0,closure=A0B0@0,sensor-aging=dropout:0.24@0"
    assert drift.at(0).text == ""


def test_the_long_horizon_is_a_new_draw_every_period(base: Scenario, tmp_path: Path) -> None:
    drift = Drift.parse("", hours=0.25).check(base)
    long = drift.scenario(base)
    path = route_file(drift, long, 3, RESAMPLE, tmp_path)
    assert route_file(drift, long, 3, RESAMPLE, tmp_path) == path  # cached
    mtime = path.stat().st_mtime_ns
    assert route_file(drift, long, 3, RESAMPLE, tmp_path).stat().st_mtime_ns == mtime
    trips = _trips(path)
    departs = [float(t.get("depart", "")) for t in trips]
    assert departs == sorted(departs) and 0 <= departs[0] and departs[-1] < 900
    periods = [[t for t in trips if t.get("id", "").startswith(f"p{k}.")] for k in range(3)]
    assert all(periods)
    assert [(t.get("from"), t.get("to")) for t in periods[0]] != \
        [(t.get("from"), t.get("to")) for t in periods[1]]
    again = route_file(drift, long, 3, RESAMPLE, tmp_path / "other")
    assert again.read_bytes() == path.read_bytes()  # the same seed, the same file
    assert route_file(drift, long, 4, RESAMPLE, tmp_path).read_bytes() != path.read_bytes()
    assert not list(path.parent.glob(".*tmp"))  # written atomically


def test_fixed_demand_repeats_the_route_files_shifted(base: Scenario, tmp_path: Path) -> None:
    drift = Drift.parse("", hours=0.2).check(base)
    trips = _trips(route_file(drift, drift.scenario(base), 0, Demand(), tmp_path))
    source = [t for t in _trips(base.route_files[0]) if float(t.get("depart", "")) < 300]
    first = [t for t in trips if "." not in t.get("id", "")]
    assert [t.attrib for t in first] == [t.attrib for t in source]
    second = [t for t in trips if t.get("id", "").endswith(".1")]
    assert [float(t.get("depart", "")) - 300 for t in second] == \
        pytest.approx([float(t.get("depart", "")) for t in source])
    assert all(float(t.get("depart", "")) < 720 for t in trips)
    with pytest.raises(DriftError, match="give --demand resample"):
        route_file(Drift.parse("growth=+10%@1m", hours=0.2).check(base),
                   drift.scenario(base), 0, Demand(), tmp_path)


def test_growth_od_shift_and_surge_change_the_traffic(base: Scenario, tmp_path: Path) -> None:
    def trips(text: str) -> list[ET.Element]:
        drift = Drift.parse(text, hours=1).check(base)
        return _trips(route_file(drift, drift.scenario(base), 0, RESAMPLE, tmp_path))

    still = trips("")
    grown = trips("growth=+100%@30m")
    early = [t for t in grown if float(t.get("depart", "")) < 1800]
    assert [t.attrib for t in early] == [t.attrib for t in still
                                         if float(t.get("depart", "")) < 1800]
    late = sum(float(t.get("depart", "")) >= 1800 for t in grown)
    assert late > 1.6 * sum(float(t.get("depart", "")) >= 1800 for t in still)
    shifted = trips("od-shift=100%@30m")
    pairs = [(t.get("from"), t.get("to")) for t in shifted]
    base_pairs = [(t.get("from"), t.get("to")) for t in still]
    assert pairs[: len(early)] == base_pairs[: len(early)]
    moved = [p != q for p, q, t in zip(pairs, base_pairs, still)
             if float(t.get("depart", "")) >= 1800]
    assert all(moved) and len(pairs) == len(base_pairs)
    surged = trips("surge=right0B0+3600@10m-20m")
    extra = [t for t in surged if t.get("id", "").startswith("surge0.")]
    assert 500 < len(extra) < 700  # about one vehicle a second over ten minutes
    assert {t.get("from") for t in extra} == {"right0B0"}
    assert all(600 <= float(t.get("depart", "")) < 1200 for t in extra)
    assert {t.get("to") for t in extra} <= {t.get("to") for t in still}


def test_a_closure_keeps_vehicles_off_the_closed_edge(base: Scenario, tmp_path: Path) -> None:
    # a surge from the edge to be closed gives vehicles that would depart on it
    drift = Drift.parse("surge=A0B0+600@0-15m,closure=A0B0@5m-10m", hours=0.25).check(base)
    trips = _trips(route_file(drift, drift.scenario(base), 0, RESAMPLE, tmp_path))
    surge = [t for t in trips if t.get("id", "").startswith("surge0.")]
    during = [t for t in surge if 300 <= float(t.get("depart", "")) < 600]
    assert during and {t.get("from") for t in during} <= {"A1A0", "bottom0A0", "left0A0"}
    assert {t.get("from") for t in surge if float(t.get("depart", "")) >= 600} == {"A0B0"}


def routed(base: Scenario, folder: Path) -> Scenario:
    """``base``'s net with vehicles on a named and on embedded routes, all through A0B0."""
    lines = ['<routes>', '    <vType id="car"/>',
             '    <route id="r0" edges="left0A0 A0B0 B0right0"/>']
    for n in range(60):
        lines.append(f'    <vehicle id="n{n}" depart="{5 * n}" route="r0" type="car" '
                     'departLane="0"/>' if n % 2 else
                     f'    <vehicle id="e{n}" depart="{5 * n}" type="car"><route '
                     'edges="bottom0A0 A0B0 B0bottom1"/><stop lane="B0bottom1_0" '
                     'duration="1"/></vehicle>')
    path = folder / "routed.rou.xml"
    path.write_text("\n".join([*lines, "</routes>\n"]))
    return dataclasses.replace(base, route_files=(path,))


def test_routed_vehicles_become_trips_where_a_change_needs_it(base: Scenario,
                                                              tmp_path: Path) -> None:
    scenario = routed(base, tmp_path)
    closed = Drift.parse("closure=A0B0@1m-2m", hours=600 / 3600).check(scenario)
    vehicles = _trips(route_file(closed, closed.scenario(scenario), 0, Demand(), tmp_path))
    trips = [v for v in vehicles if v.tag == "trip"]
    assert {float(v.get("depart", "")) for v in trips} == {float(t) for t in range(60, 120, 5)}
    assert {(v.get("from"), v.get("to")) for v in trips} == {("left0A0", "B0right0"),
                                                             ("bottom0A0", "B0bottom1")}
    assert all(v.get("route") is None and v.find("route") is None and v.get("departLane")
               is None for v in trips)  # no route, stop or lane that the new route may miss
    assert len(vehicles) == 120 and all(v.tag == "vehicle" for v in vehicles
                                        if not 60 <= float(v.get("depart", "")) < 120)
    shifted = Drift.parse("od-shift=100%@5m", hours=600 / 3600).check(scenario)
    drawn = _trips(route_file(shifted, shifted.scenario(scenario), 0, RESAMPLE, tmp_path))
    still = Drift.parse("", hours=600 / 3600).check(scenario)
    before = _trips(route_file(still, still.scenario(scenario), 0, RESAMPLE, tmp_path))
    late = [(v, w) for v, w in zip(drawn, before) if float(v.get("depart", "")) >= 300]
    assert late and len(drawn) == len(before)
    assert all(v.tag == "trip" and w.tag == "vehicle" for v, w in late)
    ends = {"r0": ("left0A0", "B0right0"), None: ("bottom0A0", "B0bottom1")}
    assert all((v.get("from"), v.get("to")) != ends[w.get("route")] for v, w in late)


def test_a_closure_needs_a_way_around_it() -> None:
    cologne8 = networks.get("cologne8")
    with pytest.raises(DriftError, match=r"58 of the 579 origin-destination pairs of the demand "
                                         r"have no way around '-23283579#0'"):
        Drift.parse("closure=-23283579#0@2h", hours=3).check(cologne8)
    with pytest.raises(DriftError, match=r"traffic enters the network on '-42925825#2' \(no "
                                         "edge but a U-turn leads into it\\)"):
        Drift.parse("closure=-42925825#2@2h", hours=3).check(cologne8)
    main = Drift.parse("closure=-186623965#16@2h", hours=3).check(cologne8)
    assert main.period_s == 3600
