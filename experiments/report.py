"""Reports of a results directory: ``report.md`` with a summary table and PNG plots.

A sweep's folder (``store/`` and ``plan.json``, see :mod:`experiments.sweep`) or a
``compare`` results folder (``metrics.parquet``, ``summary.json``, ``trips.parquet``)
becomes:

- ``report.md``: mean ± 95% CI over seeds per network and controller, delay versus fixed
  timing in % (with the 95% CI of the paired per-seed difference), failed runs;
- ``plots/delay.png``: mean delay per controller with its 95% CI, a panel per network;
- ``plots/delay_vs_fixed.png``: delay versus fixed timing in %, with its 95% CI;
- ``plots/delay_over_time.png``: mean delay of trips by scheduled departure over the
  simulated horizon, per controller (mean over seeds);
- ``plots/learning_curves.png``: evaluation delay against training episodes, where a
  controller was trained.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from experiments import results, store
from experiments.compare import SUMMARY_KPIS
from experiments.stats import mean_ci95

REFERENCE = "fixed"
PLOTS = ("delay.png", "delay_vs_fixed.png", "delay_over_time.png", "learning_curves.png")
MAX_PANELS = 12
"""Panels per figure (networks x traffic cells); more are left out of the plots, not the table."""


class ReportError(ValueError):
    """A folder that holds no results to report; the message is one line."""


def plain(value: Any) -> Any:
    """NumPy scalars as Python numbers; NaN as None (JSON has no NaN)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# ------------------------------------------------------------------ loading
def _plan(folder: Path) -> dict[str, Any] | None:
    path = folder / "plan.json"
    return json.loads(path.read_text()) if path.is_file() else None


def load_runs(folder: Path) -> pd.DataFrame:
    """The runs of a results folder as store rows (both statuses), in the plan's order.

    A sweep folder gives the store's rows of the runs in its ``plan.json``; a ``compare``
    folder gives its ``metrics.parquet`` as finished rows (with the delay over time from
    ``trips.parquet``).

    Raises:
        ReportError: The folder holds neither.
    """
    folder = Path(folder)
    if (folder / store.STORE).is_dir():
        rows = store.read(folder)
        plan = _plan(folder)
        if plan is not None:
            order = {run["hash"]: i for i, run in enumerate(plan["runs"])}
            rows = rows[rows["hash"].isin(order)].copy()
            rows["order"] = rows["hash"].map(order)
        else:
            rows = rows.copy()
            rows["order"] = range(len(rows))
        return rows.sort_values(["order", "attempt"], kind="stable").reset_index(drop=True)
    if (folder / "metrics.parquet").is_file():
        return _compare_runs(folder)
    raise ReportError(f"{folder} holds no results: no store/ (a sweep) and no metrics.parquet "
                      "(a comparison)")


def _compare_runs(folder: Path) -> pd.DataFrame:
    from experiments.sweep import delay_over_time

    metrics = pd.read_parquet(folder / "metrics.parquet")
    doc = json.loads((folder / "summary.json").read_text()) if (
        folder / "summary.json").is_file() else {}
    begin, end = doc.get("begin_s"), doc.get("end_s")
    trips = pd.read_parquet(folder / "trips.parquet") if (folder / "trips.parquet").is_file() \
        else None
    rows = []
    for run in metrics.to_dict("records"):
        series = ""
        if trips is not None and begin is not None and end is not None:
            mine = trips[(trips["controller"] == run["controller"])
                         & (trips["seed"] == run["seed"])]
            series = json.dumps(delay_over_time(mine, begin, end))
        rows.append({**run, "hash": f"{run['controller']}-{run['seed']}",
                     "experiment": folder.name, "network": doc.get("network", folder.name),
                     "status": "ok", "attempt": 1, "delay_over_time": series})
    frame = pd.DataFrame(rows)
    out = store.empty()
    out = pd.concat([out, frame[[c for c in frame.columns if c in store.COLUMNS]]],
                    ignore_index=True) if rows else out
    out = store.rows_frame(out.to_dict("records"))
    out["order"] = range(len(out))
    return out


# ------------------------------------------------------------------ summary
def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per network, traffic cell, controller and training setting.

    Means and 95% CIs over the seeds that finished (``seeds``), runs that never finished
    (``failed``), delay versus fixed timing in % (ratio of the means, as ``compare``), and
    ``ci95_vs_fixed_pct``: the 95% CI of the paired per-seed difference from fixed timing,
    in % of fixed timing's mean delay.
    """
    columns = ["network", "cell", "controller", "setting", "label", "seeds", "failed",
               "mean_delay_s", "ci95_delay_s", "delay_vs_fixed_pct", "ci95_vs_fixed_pct"]
    for kpi in SUMMARY_KPIS[1:]:
        columns += [kpi, "ci95_" + kpi.removeprefix("mean_")]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    ok = runs[runs["status"] == "ok"]
    finished = set(ok["hash"])
    never = runs[(runs["status"] == "failed") & ~runs["hash"].isin(finished)]
    never = never.drop_duplicates("hash")
    keys = ["network", "cell", "controller", "setting"]
    order = runs.drop_duplicates(keys)[keys].to_dict("records")
    # the reference first in each (network, cell); otherwise the plan's order
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
    return summary[columns]


def _first(runs: pd.DataFrame, key: dict[str, Any], on: Sequence[str]) -> int:
    mask = pd.Series(True, index=runs.index)
    for k in on:
        mask &= runs[k] == key[k]
    return int(runs.index[mask.to_numpy()][0])


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
    plan = _plan(folder)
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
    lines = [f"# {name}", "", headline(runs, plan), "",
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
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panels(keys: Sequence[tuple[str, str]], height: float = 3.2, width: float = 5.2) -> Any:
    plt = _pyplot()
    n = max(1, min(len(keys), MAX_PANELS))
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), dpi=110,
                             squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return plt, fig, flat[:n]


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    results.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


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
    plt, fig, axes = _panels(keys)
    for ax, (network, cell) in zip(axes, keys):
        s = summary[(summary["network"] == network) & (summary["cell"] == cell)]
        colours = ["#888888" if c == REFERENCE else "#2e7d32" for c in s["controller"]]
        ax.bar(range(len(s)), s["mean_delay_s"], yerr=s["ci95_delay_s"].fillna(0), capsize=4,
               color=colours)
        ax.set_xticks(range(len(s)), s["label"], rotation=30, ha="right", fontsize="small")
        ax.set_ylabel("mean delay per vehicle (s)")
        ax.set_title(panel_name(network, cell))
        ax.grid(axis="y", alpha=0.3)
    return _save(plt, fig, path)


def plot_delay_vs_fixed(summary: pd.DataFrame, path: Path) -> Path:
    """Horizontal bars of delay versus fixed timing in % (green: less delay), with 95% CI."""
    rest = summary[summary["controller"] != REFERENCE]
    keys = _panel_keys(rest if not rest.empty else summary)
    plt, fig, axes = _panels(keys)
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
    return _save(plt, fig, path)


def _series(text: str) -> pd.DataFrame | None:
    if not text:
        return None
    doc = json.loads(text)
    if not doc.get("bins"):
        return None
    frame = pd.DataFrame(doc["bins"], columns=["t", "delay", "n"])
    frame["t"] += float(doc.get("bin_s", 0.0)) / 2.0  # plotted at the middle of its bin
    return frame


def plot_delay_over_time(runs: pd.DataFrame, path: Path) -> Path | None:
    """Mean delay of trips by scheduled departure against simulated time, per controller."""
    ok = runs[(runs["status"] == "ok") & (runs["delay_over_time"] != "")]
    if ok.empty:
        return None
    keys = _panel_keys(ok)
    plt, fig, axes = _panels(keys, width=_width(ok))
    for ax, (network, cell) in zip(axes, keys):
        mine = ok[(ok["network"] == network) & (ok["cell"] == cell)]
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
        ax.set_xlabel("scheduled departure (min from the horizon's begin)")
        ax.set_ylabel("mean delay (s)")
        ax.set_title(panel_name(network, cell))
        ax.grid(alpha=0.3)
        _legend(ax)
    return _save(plt, fig, path)


def plot_learning_curves(folder: Path, runs: pd.DataFrame, path: Path) -> Path | None:
    """Evaluation delay (training delay where there is no evaluation) against episodes."""
    ok = runs[(runs["status"] == "ok") & (runs["curves"] != "")]
    if ok.empty:
        return None
    keys = _panel_keys(ok)
    plt, fig, axes = _panels(keys, width=_width(ok))
    for ax, (network, cell) in zip(axes, keys):
        mine = ok[(ok["network"] == network) & (ok["cell"] == cell)]
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
        ax.set_xlabel("training episode")
        ax.set_ylabel("evaluation delay (s), mean over seeds")
        ax.set_title(panel_name(network, cell))
        ax.grid(alpha=0.3)
        _legend(ax)
    return _save(plt, fig, path)
