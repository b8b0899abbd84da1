"""Reports of a results directory: ``report.md`` with a summary table and PNG plots.

A results folder (:mod:`experiments.layout`, old layouts included) becomes:

- ``report.md``: mean ± 95% CI over seeds per network and controller, delay versus fixed
  timing in % (with the 95% CI of the paired per-seed difference), failed runs;
- ``plots/delay.png``: mean delay per controller with its 95% CI, a panel per network;
- ``plots/delay_vs_fixed.png``: delay versus fixed timing in %, with its 95% CI;
- ``plots/delay_over_time.png``: mean delay of trips by scheduled departure over the
  simulated horizon, per controller (mean over seeds);
- ``plots/learning_curves.png``: evaluation delay against training episodes, where a
  controller was trained.

A folder with a damaged file gets no report: every damaged file is named in one line
(:class:`experiments.results.DamagedFileError`), since means and confidence intervals
over the runs that happen to read would pass for the whole plan's. ``sweep --resume``
sets damaged runs aside and runs them again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from experiments import results, store
from experiments.layout import ReportError, load_runs, read_manifest
from experiments.results import plain
from experiments.summary import REFERENCE, summarize

__all__ = ["REFERENCE", "ReportError", "headline", "load_runs", "panel_name", "plain",
           "summarize", "summary_markdown", "summary_table", "write_report"]

PLOTS = ("delay.png", "delay_vs_fixed.png", "delay_over_time.png", "learning_curves.png")
MAX_PANELS = 12
"""Panels per figure (networks x traffic cells); more are left out of the plots, not the table."""


def panel_name(network: str, cell: str) -> str:
    """``cologne1`` or ``cologne1 (scale=1.2)``."""
    return f"{network} ({cell})" if cell else network


def _fmt(mean: float, ci: float, digits: int = 1) -> str:
    if isinstance(mean, float) and math.isnan(mean):
        return "—"
    return f"{mean:.{digits}f} ± {ci:.{digits}f}"


def _pct(value: float, ci: float) -> str:
    if math.isnan(value):
        return "—"
    return f"{value:+.1f}%" + ("" if math.isnan(ci) or ci == 0 else f" ± {ci:.1f}")


def summary_rows(summary: pd.DataFrame) -> list[list[str]]:
    """The summary as table cells (shared by the Markdown and the terminal tables)."""
    out = []
    for r in summary.to_dict("records"):
        out.append([
            panel_name(r["network"], r["cell"]), r["label"],
            f"{r['seeds']}" + (f" ({r['failed']} failed)" if r["failed"] else ""),
            _fmt(r["mean_delay_s"], r["ci95_delay_s"]),
            "—" if r["controller"] == REFERENCE and not math.isnan(r["delay_vs_fixed_pct"])
            else _pct(r["delay_vs_fixed_pct"], r["ci95_vs_fixed_pct"]),
            _fmt(r["mean_travel_time_s"], r["ci95_travel_time_s"]),
            _fmt(r["mean_waiting_time_s"], r["ci95_waiting_time_s"]),
            _fmt(r["throughput_veh_h"], r["ci95_throughput_veh_h"], 0),
            _fmt(r["mean_queue_veh"], r["ci95_queue_veh"]),
        ])
    return out


HEADERS = ["network", "controller", "seeds", "delay s", "delay vs fixed", "travel time s",
           "waiting s", "throughput veh/h", "queue veh"]


def summary_table(summary: pd.DataFrame, title: str) -> Any:
    """The summary as a rich table for the terminal."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title))
    for col in HEADERS:
        table.add_column(col, justify="left" if col in ("network", "controller") else "right")
    for cells in summary_rows(summary):
        table.add_row(*(escape(c) for c in cells))  # "dqn [lr=0.01]" is no markup
    return table


def summary_markdown(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table."""
    lines = ["| " + " | ".join(HEADERS) + " |",
             "|" + "|".join(["---", "---"] + ["---:"] * (len(HEADERS) - 2)) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
              for cells in summary_rows(summary)]
    return "\n".join(lines) + "\n"


def headline(runs: pd.DataFrame, plan: dict[str, Any] | None) -> str:
    """One line: how many runs finished, failed and are still to run."""
    total = len(plan["runs"]) if plan else runs["hash"].nunique()
    ok = runs.loc[runs["status"] == "ok", "hash"].nunique()
    failed = runs.loc[(runs["status"] == "failed")
                      & ~runs["hash"].isin(runs.loc[runs["status"] == "ok", "hash"]),
                      "hash"].nunique()
    todo = total - ok - failed
    networks = runs["network"].nunique() if not runs.empty else 0
    text = f"{total} runs: {ok} finished, {failed} failed"
    if todo:
        text += f", {todo} not run yet"
    return text + f"; {networks} network(s)."


# ------------------------------------------------------------------ the report
def conditions_line(plan: dict[str, Any] | None) -> list[str]:
    """The demand and protocol the manifest records, as a paragraph (none if it has neither)."""
    demand = (plan or {}).get("demand")
    if not isinstance(demand, dict):
        return []
    mode = demand.get("mode", "fixed")
    text = f"Demand: {mode}, scale {demand.get('scale', 1.0):g}"
    if mode == "resample":
        text += f", {demand.get('bin_s', 300)} s bins (a new draw of the trips for every seed)"
    else:
        text += " (the route files' trips, the same for every seed)"
    protocol = (plan or {}).get("protocol", "greenphase")
    return [f"{text}; protocol {protocol}.", ""]


def write_report(folder: Path, *, extra: str = "") -> Path:
    """Write ``report.md`` and ``plots/*.png`` for a results folder; return the report's path.

    Args:
        folder: A sweep's or a comparison's results folder.
        extra: Markdown appended to the report (e.g. the gates' verdicts).

    Raises:
        ReportError: The folder holds no results.
    """
    folder = Path(folder)
    runs = load_runs(folder)
    summary = summarize(runs)
    plan = read_manifest(folder)
    name = plan["name"] if plan else folder.name
    plots = folder / "plots"
    drawn = []
    if not summary.empty:
        drawn.append(("mean delay per controller, 95% CI over seeds",
                      plot_delay(summary, plots / "delay.png")))
        if summary["delay_vs_fixed_pct"].notna().any():
            drawn.append(("delay versus fixed timing in %, 95% CI of the paired difference",
                          plot_delay_vs_fixed(summary, plots / "delay_vs_fixed.png")))
    over_time = plot_delay_over_time(runs, plots / "delay_over_time.png")
    if over_time is not None:
        drawn.append(("mean delay of trips by scheduled departure, mean over seeds", over_time))
    curves = plot_learning_curves(folder, runs, plots / "learning_curves.png")
    if curves is not None:
        drawn.append(("learning curves: evaluation delay against training episodes", curves))
    lines = [f"# {name}", "", headline(runs, plan), "", *conditions_line(plan),
             "Mean ± 95% confidence interval over seeds. Delay is `timeLoss + departDelay` "
             "over every vehicle due in the horizon (arrived, still running, never inserted). "
             "Delay vs fixed: ratio of the mean delays, ± the 95% CI of the paired per-seed "
             "difference.", "", summary_markdown(summary)]
    for caption, path in drawn:
        lines += [f"![{caption}](plots/{path.name})", ""]
    failed = runs[(runs["status"] == "failed")
                  & ~runs["hash"].isin(runs.loc[runs["status"] == "ok", "hash"])]
    if not failed.empty:
        last = failed.drop_duplicates("hash", keep="last")
        lines += ["## Failed runs", "", "| network | controller | seed | attempts | error |",
                  "|---|---|---:|---:|---|"]
        lines += [f"| {panel_name(r['network'], r['cell'])} | {r['controller']} | {r['seed']} | "
                  f"{r['attempt']} | {r['error'].replace('|', '/')} |"
                  for r in last.to_dict("records")]
        lines.append("")
    if extra:
        lines += [extra.rstrip(), ""]
    return results.write_text(folder / "report.md", "\n".join(lines))


# ------------------------------------------------------------------ plots
def _panels(keys: Sequence[tuple[str, str]], height: float = 3.2, width: float = 5.2) -> Any:
    plt = results.pyplot()
    n = max(1, min(len(keys), MAX_PANELS))
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), dpi=110,
                             squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return plt, fig, flat[:n]


def _panel_keys(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return list(dict.fromkeys(zip(frame["network"], frame["cell"])))[:MAX_PANELS]


def _width(runs: pd.DataFrame) -> float:
    """Panel width: room for a legend beside the axes when there are many lines."""
    lines = len(runs.drop_duplicates(["controller", "setting"]))
    return 5.2 if lines <= 4 else 5.2 + min(4.0, 0.06 * runs["setting"].str.len().max() + 1.5)


def _legend(ax: Any) -> None:
    """A legend inside the axes, or beside them when it has many entries."""
    entries = len(ax.get_legend_handles_labels()[0])
    if entries > 4:
        ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    elif entries:
        ax.legend(fontsize="x-small")


def plot_delay(summary: pd.DataFrame, path: Path) -> Path:
    """Bars of mean delay per controller with the 95% CI, one panel per network."""
    keys = _panel_keys(summary)
    _, fig, axes = _panels(keys)
    for ax, (network, cell) in zip(axes, keys):
        s = summary[(summary["network"] == network) & (summary["cell"] == cell)]
        colours = ["#888888" if c == REFERENCE else "#2e7d32" for c in s["controller"]]
        ax.bar(range(len(s)), s["mean_delay_s"], yerr=s["ci95_delay_s"].fillna(0), capsize=4,
               color=colours)
        ax.set_xticks(range(len(s)), s["label"], rotation=30, ha="right", fontsize="small")
        ax.set_ylabel("mean delay per vehicle (s)")
        ax.set_title(panel_name(network, cell))
        ax.grid(axis="y", alpha=0.3)
    return results.save_figure(fig, path)


def plot_delay_vs_fixed(summary: pd.DataFrame, path: Path) -> Path:
    """Horizontal bars of delay versus fixed timing in % (green: less delay), with 95% CI."""
    rest = summary[summary["controller"] != REFERENCE]
    keys = _panel_keys(rest if not rest.empty else summary)
    _, fig, axes = _panels(keys)
    for ax, (network, cell) in zip(axes, keys):
        s = rest[(rest["network"] == network) & (rest["cell"] == cell)]
        values = s["delay_vs_fixed_pct"].fillna(0.0)
        ax.barh(range(len(s)), values, xerr=s["ci95_vs_fixed_pct"].fillna(0), capsize=3,
                color=["#2e7d32" if v < 0 else "#c62828" for v in values])
        ax.set_yticks(range(len(s)), s["label"], fontsize="small")
        ax.invert_yaxis()
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_xlabel("delay versus fixed timing (%)")
        ax.set_title(panel_name(network, cell))
        ax.grid(axis="x", alpha=0.3)
    return results.save_figure(fig, path)


def _series(text: str) -> pd.DataFrame | None:
    if not text:
        return None
    doc = json.loads(text)
    if not doc.get("bins"):
        return None
    frame = pd.DataFrame(doc["bins"], columns=["t", "delay", "n"])
    frame["t"] += float(doc.get("bin_s", 0.0)) / 2.0  # plotted at the middle of its bin
    return frame


def _line_panels(runs: pd.DataFrame, column: str) -> tuple[Any, list[Any]] | None:
    """A figure of one panel per network and cell, for the finished runs that have ``column``.

    Returns:
        The figure and, per panel, ``(axes, network, cell, runs)``; None without such runs.
    """
    ok = runs[(runs["status"] == "ok") & (runs[column] != "")]
    if ok.empty:
        return None
    keys = _panel_keys(ok)
    _, fig, axes = _panels(keys, width=_width(ok))
    return fig, [(ax, network, cell, ok[(ok["network"] == network) & (ok["cell"] == cell)])
                 for ax, (network, cell) in zip(axes, keys)]


def _finish_panel(ax: Any, network: str, cell: str, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(panel_name(network, cell))
    ax.grid(alpha=0.3)
    _legend(ax)


def plot_delay_over_time(runs: pd.DataFrame, path: Path) -> Path | None:
    """Mean delay of trips by scheduled departure against simulated time, per controller."""
    panels = _line_panels(runs, "delay_over_time")
    if panels is None:
        return None
    fig, axes = panels
    for ax, network, cell, mine in axes:
        labels = list(dict.fromkeys(zip(mine["controller"], mine["setting"])))
        labels.sort(key=lambda k: k[0] != REFERENCE)
        for controller, setting in labels:
            parts = [_series(t) for t in mine[(mine["controller"] == controller)
                                              & (mine["setting"] == setting)]["delay_over_time"]]
            frames = [p for p in parts if p is not None]
            if not frames:
                continue
            mean = pd.concat(frames).groupby("t")["delay"].mean()
            label = f"{controller} [{setting}]" if setting else controller
            ax.plot(mean.index / 60.0, mean.to_numpy(), marker=".", label=label,
                    color="#616161" if controller == REFERENCE else None,
                    linestyle="--" if controller == REFERENCE else "-")
        _finish_panel(ax, network, cell, "scheduled departure (min from the horizon's begin)",
                      "mean delay (s)")
    return results.save_figure(fig, path)


def plot_learning_curves(folder: Path, runs: pd.DataFrame, path: Path) -> Path | None:
    """Evaluation delay (training delay where there is no evaluation) against episodes."""
    panels = _line_panels(runs, "curves")
    if panels is None:
        return None
    fig, axes = panels
    for ax, network, cell, mine in axes:
        for (controller, setting), group in mine.groupby(["controller", "setting"], sort=False):
            curves = [store.read_curves(folder, rel) for rel in group["curves"]]
            frames = [c for c in curves if c is not None and not c.empty]
            if not frames:
                continue
            data = pd.concat(frames)
            column = "eval_delay_s" if data["eval_delay_s"].notna().any() else "mean_delay_s"
            mean = data.dropna(subset=[column]).groupby("episode")[column].mean()
            label = f"{controller} [{setting}]" if setting else controller
            ax.plot(mean.index + 1, mean.to_numpy(), marker=".", label=f"{label} ({len(frames)})")
        ax.xaxis.get_major_locator().set_params(integer=True)
        _finish_panel(ax, network, cell, "training episode",
                      "evaluation delay (s), mean over seeds")
    return results.save_figure(fig, path)
