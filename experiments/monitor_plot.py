"""``monitor.png``: a seed's KPIs and drift score over time, change points and alarms marked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments import results

PANELS = (
    ("delay_s", "delay s\n(arrivals)", "delay"),
    ("queue_veh", "queue veh", "queue"),
    ("throughput_veh_h", "throughput\nveh/h", "throughput"),
    ("volume_veh", "vehicles on\ndetectors", "volume"),
    ("drift_score", "drift score\n(PSI, p90)", "drift"),
)
"""Column, axis label and the detector whose alarms it shows, top to bottom."""


def plot(windows: pd.DataFrame, alarms: Sequence[Mapping[str, Any]],
         change_points: Sequence[tuple[float, str]], title: str, path: Path) -> Path:
    """Plot one seed's windows (``monitor.parquet`` rows) with its alarms; write ``path``."""
    plt = results.pyplot()
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(9, 9.5), sharex=True)
    labelled = False
    ends = windows["end_s"].to_numpy(float) / 3600
    for ax, (column, label, detector) in zip(axes, PANELS, strict=True):
        values = windows[column].to_numpy(float)
        ax.plot(ends, values, color="tab:blue", lw=1.2, marker=".", ms=3)
        ax.set_ylabel(label, fontsize=9)
        ax.grid(alpha=0.3)
        for at, change in change_points:
            ax.axvline(at / 3600, color="tab:orange", ls="--", lw=1.2)
            if ax is axes[0]:
                ax.annotate(change, (at / 3600, 1.0), xycoords=("data", "axes fraction"),
                            xytext=(3, -12), textcoords="offset points", fontsize=8,
                            color="tab:orange")
        mine = [a for a in alarms if a["detector"] == detector]
        if mine:
            value = dict(zip(windows["end_s"].to_numpy(float), values, strict=True))
            ax.scatter([a["time_s"] / 3600 for a in mine],
                       [value.get(float(a["time_s"]), np.nan) for a in mine], marker="v",
                       s=60, color="tab:red", zorder=3, label="alarm (its window's value)")
            if not labelled:
                ax.legend(loc="upper left", fontsize=8)
                labelled = True
    axes[-1].set_xlabel("simulated hours from the begin (each window at its end, where its "
                        "alarms are)")
    axes[0].set_title(title, fontsize=10)
    return results.save_figure(fig, path)
