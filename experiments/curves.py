"""A training run's ``curves.csv`` (one row per update and one per episode) and its plot."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pandas as pd

from experiments import results

CURVE_COLUMNS = [
    "kind", "episode", "update", "lr", "loss", "grad_norm", "epsilon",
    "return", "mean_delay_s", "eval_delay_s", "wall_s", "bytes",
]


class CurveLog:
    """``curves.csv``: appended row by row, cut back to the checkpoint on resume."""

    def __init__(self, path: Path, *, resume_at: int | None) -> None:
        self.path = path
        if resume_at is None or not path.is_file():
            results.write_text(path, ",".join(CURVE_COLUMNS) + "\n")
        else:
            kept = pd.read_csv(path)
            # reindex: a run begun before a column was added resumes with it empty
            kept = kept[kept["episode"] < resume_at].reindex(columns=CURVE_COLUMNS)
            results.atomic_write(path, lambda tmp: kept.to_csv(tmp, index=False))
        self._file = path.open("a", newline="")
        self._writer = csv.DictWriter(self._file, CURVE_COLUMNS, extrasaction="ignore")

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Append rows and flush them to disk."""
        self._writer.writerows(rows)
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def plot_learning_curve(curves: Path, path: Path) -> Path | None:
    """Episode return and delay (training and evaluation) against episodes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = pd.read_csv(curves)
    episodes = data[data["kind"] == "episode"]
    if episodes.empty:
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 5.2), dpi=120, sharex=True)
    top.plot(episodes["episode"], episodes["return"], color="#455a64")
    top.set_ylabel("episode return")
    bottom.plot(episodes["episode"], episodes["mean_delay_s"], label="training (exploring)",
                color="#90a4ae")
    evals = episodes.dropna(subset=["eval_delay_s"])
    bottom.plot(evals["episode"], evals["eval_delay_s"], "o-", label="evaluation (greedy)",
                color="#2e7d32")
    bottom.set_ylabel("mean delay (s)")
    bottom.set_xlabel("episode")
    bottom.legend()
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    results.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path
