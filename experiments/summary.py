"""Summaries over seeds: one row per network, traffic cell, controller and training setting.

Every command summarises its runs here (``compare``, ``evaluate``, ``run``, ``sweep``,
``robustness``, ``report``): means and Student-t 95% confidence intervals over the seeds
that finished, and delay versus fixed timing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from experiments.results import plain
from experiments.stats import mean_ci95

REFERENCE = "fixed"
"""The controller every other is measured against."""
SUMMARY_KPIS = (
    "mean_delay_s",
    "mean_travel_time_s",
    "mean_waiting_time_s",
    "throughput_veh_h",
    "mean_queue_veh",
)
"""The metrics summarised over seeds (each with its ``ci95_...`` column)."""
KEYS = ("network", "cell", "controller", "setting")
"""What a summary row is of."""


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A frame's rows as plain JSON values."""
    return [{k: plain(v) for k, v in row.items()} for row in frame.to_dict("records")]


def columns() -> list[str]:
    """The summary's columns, in order."""
    out = ["network", "cell", "controller", "setting", "label", "seeds", "failed",
           "mean_delay_s", "ci95_delay_s", "delay_vs_fixed_pct", "ci95_vs_fixed_pct"]
    for kpi in SUMMARY_KPIS[1:]:
        out += [kpi, "ci95_" + kpi.removeprefix("mean_")]
    return out


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per network, traffic cell, controller and training setting.

    Means and 95% CIs over the seeds that finished (``seeds``), in the order of the
    rows; runs that never finished (``failed``); delay versus fixed timing in % (ratio
    of the means); and ``ci95_vs_fixed_pct``: the 95% CI of the paired per-seed
    difference from fixed timing, in % of fixed timing's mean delay.

    Args:
        runs: Store rows (:data:`experiments.store.COLUMNS`), both statuses.
    """
    if runs.empty:
        return pd.DataFrame(columns=columns())
    ok = runs[runs["status"] == "ok"]
    finished = set(ok["hash"])
    never = runs[(runs["status"] == "failed") & ~runs["hash"].isin(finished)]
    never = never.drop_duplicates("hash")
    keys = list(KEYS)
    order = runs.drop_duplicates(keys)[keys].to_dict("records")
    # the reference first in each (network, cell); otherwise the runs' order
    order.sort(key=lambda k: (_first(runs, k, ("network", "cell")), k["controller"] != REFERENCE))
    rows = []
    for key in order:
        mask = pd.Series(True, index=ok.index)
        for k in keys:
            mask &= ok[k] == key[k]
        group = ok[mask]
        failed = int((never[keys] == pd.Series(key)).all(axis=1).sum()) if len(never) else 0
        label = f"{key['controller']} [{key['setting']}]" if key["setting"] else key["controller"]
        row: dict[str, Any] = {**key, "label": label, "seeds": len(group), "failed": failed}
        for kpi in SUMMARY_KPIS:
            values = group[kpi].tolist()
            mean, ci = mean_ci95(values) if values else (math.nan, math.nan)
            row[kpi] = mean
            row["ci95_" + kpi.removeprefix("mean_")] = ci
        row["_delays"] = dict(zip(group["seed"], group["mean_delay_s"]))
        rows.append(row)
    summary = pd.DataFrame(rows)
    vs: list[float] = []
    cis: list[float] = []
    for row in rows:
        ref = next((r for r in rows if r["network"] == row["network"] and r["cell"] == row["cell"]
                    and r["controller"] == REFERENCE), None)
        if ref is None or not ref["mean_delay_s"] > 0:
            vs.append(math.nan)
            cis.append(math.nan)
            continue
        vs.append((row["mean_delay_s"] / ref["mean_delay_s"] - 1.0) * 100.0)
        common = sorted(set(row["_delays"]) & set(ref["_delays"]))
        diffs = [row["_delays"][s] - ref["_delays"][s] for s in common]
        cis.append(mean_ci95(diffs)[1] / ref["mean_delay_s"] * 100.0 if diffs else math.nan)
    summary["delay_vs_fixed_pct"] = vs
    summary["ci95_vs_fixed_pct"] = cis
    return summary[columns()]


def _first(runs: pd.DataFrame, key: dict[str, Any], on: Sequence[str]) -> int:
    mask = pd.Series(True, index=runs.index)
    for k in on:
        mask &= runs[k] == key[k]
    return int(runs.index[mask.to_numpy()][0])
