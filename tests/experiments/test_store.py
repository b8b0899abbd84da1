"""The results store on its own: runs, failed attempts, trips and curves, read back; resume sets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from experiments import store
from simulator.metrics import KPI_NAMES


def row(run_hash: str, status: str = "ok", attempt: int = 1, **more: object) -> dict:
    return {"hash": run_hash, "experiment": "unit", "network": "alpha", "cell": "",
            "controller": "fixed", "setting": "", "seed": 0, "status": status,
            "attempt": attempt, **dict.fromkeys(KPI_NAMES, 1.5), **more}


def test_runs_failures_trips_and_curves_read_back(tmp_path: Path) -> None:
    trips = pd.DataFrame({"vehicle": ["a", "b"], "delay_s": [1.0, 2.0]})
    curves = pd.DataFrame({"episode": [0, 1], "eval_delay_s": [9.0, 8.0]})
    with store.Store(tmp_path) as st:
        st.write_run(row("aaa", error=""), trips=trips, curves=curves)
        st.write_failure(row("bbb", "failed", 1, error="SumoError: boom"))
        st.write_failure(row("bbb", "failed", 2, error="SumoError: boom again"))
        st.write_run(row("ccc", mean_delay_s=7.25))
        assert st.finished() == {"aaa", "ccc"}
        assert st.failed_attempts() == {"bbb": 2}
    rows = store.read(tmp_path)
    assert list(rows.columns) == list(store.COLUMNS)
    assert len(rows) == 4 and set(rows["status"]) == {"ok", "failed"}
    ok = store.read(tmp_path, status="ok").set_index("hash")
    assert sorted(ok.index) == ["aaa", "ccc"] and ok.loc["ccc", "mean_delay_s"] == 7.25
    failed = store.read(tmp_path, status="failed")
    assert list(failed["attempt"]) == [1, 2] and failed["error"].str.contains("boom").all()
    pd.testing.assert_frame_equal(store.read_trips(tmp_path, ok.loc["aaa", "trips"]), trips)
    pd.testing.assert_frame_equal(store.read_curves(tmp_path, ok.loc["aaa", "curves"]), curves)
    assert ok.loc["ccc", "trips"] == "" and store.read_trips(tmp_path, "") is None
    assert store.has_runs(tmp_path) and not store.has_runs(tmp_path / "elsewhere")


def test_an_empty_store_reads_as_typed_columns(tmp_path: Path) -> None:
    rows = store.read(tmp_path)
    assert rows.empty and list(rows.columns) == list(store.COLUMNS)
    assert str(rows["seed"].dtype) == "int64" and str(rows["mean_delay_s"].dtype) == "float64"


def test_a_torn_write_is_ignored_and_swept_away(tmp_path: Path) -> None:
    with store.Store(tmp_path) as st:
        st.write_run(row("aaa"))
    # a writer killed mid-write leaves only its temporary file: never a run
    torn = tmp_path / "store" / "runs" / ".bbb.parquet.x1y2.tmp"
    torn.write_bytes(b"PAR1 half a file")
    assert store.read(tmp_path)["hash"].tolist() == ["aaa"]
    with store.Store(tmp_path) as st:
        assert st.finished() == {"aaa"}
    assert not torn.exists()


def test_clear_removes_every_run_and_attempt(tmp_path: Path) -> None:
    with store.Store(tmp_path) as st:
        st.write_run(row("aaa"), trips=pd.DataFrame({"x": [1]}))
        st.write_failure(row("bbb", "failed"))
        st.clear()
        assert st.finished() == set() and st.failed_attempts() == {}
    assert store.read(tmp_path).empty and not store.has_runs(tmp_path)


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    code = (f"import time\nfrom experiments import store\n"
            f"with store.Store({str(tmp_path)!r}):\n    print('held', flush=True)\n"
            f"    time.sleep(30)\n")
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                          text=True) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            with pytest.raises(store.StoreBusyError, match=f"pid {holder.pid}"), \
                    store.Store(tmp_path):
                pass
        finally:
            holder.kill()
    with store.Store(tmp_path) as st:  # released with its holder
        st.write_run(row("aaa"))
    assert json.loads(json.dumps(store.read(tmp_path)["hash"].tolist())) == ["aaa"]
    assert os.access(tmp_path / "store" / "runs" / "aaa.parquet", os.R_OK)
