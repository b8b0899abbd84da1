"""The benchmark's leaderboard: ``leaderboard.md``, ``leaderboard.csv`` and ``leaderboard.png``.

Per network and controller: mean delay ± 95% CI over the held-out seeds, the change
against fixed timing, and for the learned policy its training episodes and wall time;
beside them, in their own columns, RESCO's published figures for the same network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from experiments import layout, results
from experiments.summary import summarize

if TYPE_CHECKING:
    from experiments.benchmark import Benchmark

__all__ = ["RESCO", "RESCO_SOURCE", "ResCoFigures", "leaderboard", "write_leaderboard"]


@dataclass(frozen=True)
class ResCoFigures:
    """RESCO's published mean delay on one network, in s (None: not published)."""

    fixed: float | None
    max_pressure: float
    learned: float
    method: str
    """The learner with the best figure."""


RESCO: dict[str, ResCoFigures] = {
    "cologne1": ResCoFigures(56.61, 65.85, 26.05, "IDQN"),
    "cologne3": ResCoFigures(46.35, 162.28, 23.99, "IDQN"),
    "cologne8": ResCoFigures(63.77, 47.73, 21.62, "IPPO"),
    "ingolstadt1": ResCoFigures(39.40, 23.62, 20.90, "IPPO"),
    "ingolstadt7": ResCoFigures(91.31, 46.82, 31.19, "IDQN"),
    "ingolstadt21": ResCoFigures(133.10, 136.72, 59.64, "IDQN"),
    "grid4x4": ResCoFigures(None, 52.55, 32.95, "IDQN"),
    "arterial4x4": ResCoFigures(None, 952.75, 654.13, "FMA2C"),
}
RESCO_SOURCE = (
    "RESCO's figures: mean time loss per vehicle from the raw results in its repository "
    "(github.com/Pi-Star-Lab/RESCO, resco_benchmark/utils/avg_timeLoss.py; Ault and Sharon, "
    "NeurIPS 2021 Datasets and Benchmarks): the learners' best training episode of the "
    "seed-averaged curve, on the route file's own trips (training traffic), and the classic "
    "controllers' mean over episodes; no fixed-timing figure is published for grid4x4 and "
    "arterial4x4. RESCO ran SUMO 1.9 with its own protocol (10 s decisions, 3 s yellow; "
    "arterial4x4 5 s and 2 s); greenphase's figures are on held-out resampled traffic "
    "with the SUMO of this install."
)

_COLUMNS = ["network", "controller", "name", "seeds", "mean_delay_s", "ci95_delay_s",
            "delay_vs_fixed_pct", "seeds_below_tuned_max_pressure", "train_episodes",
            "train_simulations", "train_wall_s", "resco_fixed_s",
            "resco_max_pressure_s", "resco_best_learned_s", "resco_best_method"]


def _at_once(learned: Any) -> str:
    """`` (2 at once)`` where training simulated several episodes at a time."""
    n = int(learned["train_simulations"] or 1)
    return f" ({n} at once)" if n > 1 else ""


def display_name(controller: str, learner: str) -> str:
    """``tuned:.../tune-webster`` as ``tuned webster``; the trained run as its learner."""
    if controller.startswith("tuned:"):
        return "tuned " + Path(controller.removeprefix("tuned:")).name.removeprefix("tune-")
    if controller.startswith("trained:"):
        return learner.upper()
    return controller


def leaderboard(plan: Benchmark, state: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per network and controller evaluated so far (:data:`_COLUMNS`)."""
    rows: list[dict[str, Any]] = []
    for network in plan.networks:
        done = state.get(network, {})
        if "eval" not in done:
            continue
        learner = done["eval"].get("learner", "dqn")
        trained = done.get(learner, {})
        runs = layout.load_runs(plan.folder / network / "eval")
        summary = summarize(runs)
        published = RESCO.get(network)
        for row in summary.to_dict("records"):
            is_learned = str(row["controller"]).startswith("trained:")
            rows.append({
                "network": network, "controller": display_name(row["controller"], learner),
                "name": row["controller"], "seeds": row["seeds"],
                "mean_delay_s": row["mean_delay_s"], "ci95_delay_s": row["ci95_delay_s"],
                "delay_vs_fixed_pct": row["delay_vs_fixed_pct"],
                "seeds_below_tuned_max_pressure":
                    _paired_wins(runs, row["controller"]) if is_learned else None,
                "train_episodes": trained.get("episodes") if is_learned else None,
                # stages recorded before the count was, trained one simulation at a time
                "train_simulations": trained.get("simulations", 1) if is_learned else None,
                "train_wall_s": trained.get("train_wall_s") if is_learned else None,
                "resco_fixed_s": published.fixed if published else None,
                "resco_max_pressure_s": published.max_pressure if published else None,
                "resco_best_learned_s": published.learned if published else None,
                "resco_best_method": published.method if published else None,
            })
    return pd.DataFrame(rows, columns=_COLUMNS)


def _paired_wins(runs: pd.DataFrame, controller: str) -> int:
    """On how many held-out seeds ``controller`` has a lower mean delay than tuned max-pressure.

    The mean over the seeds can hide a policy that jams on one of them (or a baseline
    that does); the paired count says how often it wins on the same traffic.
    """
    ok = runs[runs["status"] == "ok"]
    mine = ok[ok["controller"] == controller].set_index("seed")["mean_delay_s"]
    tuned = ok[ok["controller"].str.startswith("tuned:")
               & ok["controller"].str.endswith("tune-max-pressure")]
    theirs = tuned.set_index("seed")["mean_delay_s"]
    both = mine.index.intersection(theirs.index)
    return int((mine[both] < theirs[both]).sum())


def _cell(mean: Any, ci: Any = None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    text = f"{mean:.1f}"
    no_ci = ci is None or (isinstance(ci, float) and math.isnan(ci))
    return text if no_ci else f"{text} ± {ci:.1f}"


def _headline(board: pd.DataFrame, learner_names: set[str]) -> list[str]:
    lines = ["| network | fixed | tuned max-pressure | best baseline | learned | vs fixed | "
             "vs tuned max-pressure | seeds below it | training | RESCO fixed | "
             "RESCO max-pressure | RESCO best learned |",
             "|---|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---|"]
    for network, rows in board.groupby("network", sort=False):
        fixed = rows[rows["controller"] == "fixed"].iloc[0]
        baselines = rows[~rows["controller"].isin(learner_names)]
        best = baselines.loc[baselines["mean_delay_s"].idxmin()]
        pressure = rows[rows["controller"] == "tuned max-pressure"].iloc[0]
        learned = rows[rows["controller"].isin(learner_names)].iloc[0]
        gap = (learned["mean_delay_s"] / pressure["mean_delay_s"] - 1) * 100
        lines.append(
            f"| {network} | {_cell(fixed['mean_delay_s'], fixed['ci95_delay_s'])} | "
            f"{_cell(pressure['mean_delay_s'], pressure['ci95_delay_s'])} | "
            f"{_cell(best['mean_delay_s'], best['ci95_delay_s'])} ({best['controller']})"
            f" | **{_cell(learned['mean_delay_s'], learned['ci95_delay_s'])}** "
            f"({learned['controller']}) | {learned['delay_vs_fixed_pct']:+.1f}% | {gap:+.1f}% | "
            f"{int(learned['seeds_below_tuned_max_pressure'])}/{int(learned['seeds'])} | "
            f"{int(learned['train_episodes'] or 0)} episodes{_at_once(learned)}, "
            f"{learned['train_wall_s'] or 0:.0f} s"
            f" | {_cell(fixed['resco_fixed_s'])} | {_cell(fixed['resco_max_pressure_s'])} | "
            + (f"{_cell(fixed['resco_best_learned_s'])} ({fixed['resco_best_method']}) |"
               if isinstance(fixed["resco_best_method"], str) else "— |"))
    return lines


def _counts(board: pd.DataFrame, learner_names: set[str], protocol: str) -> list[str]:
    """On how many networks the learned policy beats each reference, in words."""
    learned = board[board["controller"].isin(learner_names)].set_index("network")
    if learned.empty:
        return []

    def mean_of(controller: str) -> pd.Series:
        rows = board[board["controller"] == controller].set_index("network")
        return rows["mean_delay_s"].reindex(learned.index)

    baselines = board[~board["controller"].isin(learner_names)]
    best = baselines.groupby("network", sort=False)["mean_delay_s"].min()
    mine, n = learned["mean_delay_s"], len(learned)
    resco = learned["resco_best_learned_s"].astype(float)
    below_resco = mine[resco.notna()] < resco[resco.notna()]
    return [
        f"The learned policy has a lower mean delay than tuned max-pressure on "
        f"{int((mine < mean_of('tuned max-pressure')).sum())} of {n} networks, than every "
        f"baseline (tuned or not) on {int((mine < best.reindex(learned.index)).sum())} of {n}, and "
        f"than RESCO's best published learned figure on {int(below_resco.sum())} of "
        f"{len(below_resco)} (protocol `{protocol}`; RESCO's are best training episodes on "
        f"training traffic, these are held-out seeds: see below).",
    ]


def _markdown(plan: Benchmark, board: pd.DataFrame, wall_s: float) -> str:
    learners = {name.upper() for name in plan.learners}
    seeds = len(plan.evaluation_seeds)
    lines = [
        "# Leaderboard", "",
        f"Networks: {', '.join(plan.networks)}; protocol `{plan.protocol}`; held-out "
        f"evaluation seeds 0-{seeds - 1} with resampled demand (traffic that tuning and "
        f"training never drew); learners trained within {plan.budget_min:g} min each"
        f"{' (smoke: short horizons)' if plan.smoke else ''}. Mean delay per vehicle in s, "
        f"mean ± 95% CI over the seeds. Wall time of the benchmark's stages: "
        f"{wall_s / 60:.1f} min (a stage resumed after an interruption counts from where it "
        f"resumed; its training wall time below counts all of its training).",
        "", *_headline(board, learners), "", *_counts(board, learners, plan.protocol), "",
        "## Every controller", "",
        "| network | controller | seeds | delay s | vs fixed |", "|---|---|---:|---:|---:|",
    ]
    for row in board.to_dict("records"):
        vs = row["delay_vs_fixed_pct"]
        change = "—" if row["controller"] == "fixed" or math.isnan(vs) else f"{vs:+.1f}%"
        lines.append(f"| {row['network']} | {row['controller']} | {row['seeds']} | "
                     f"{_cell(row['mean_delay_s'], row['ci95_delay_s'])} | {change} |")
    lines += ["", RESCO_SOURCE, ""]
    return "\n".join(lines)


def _plot(board: pd.DataFrame, path: Path) -> Path | None:
    if board.empty:
        return None
    plt = results.pyplot()
    networks = list(dict.fromkeys(board["network"]))
    controllers = list(dict.fromkeys(board["controller"]))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(networks) + 2), 4.5))
    width = 0.8 / len(controllers)
    for i, controller in enumerate(controllers):
        xs, ys, es = [], [], []
        for j, network in enumerate(networks):
            rows = board[(board["network"] == network) & (board["controller"] == controller)]
            fixed = board[(board["network"] == network) & (board["controller"] == "fixed")]
            if rows.empty or fixed.empty:
                continue
            ref = float(fixed["mean_delay_s"].iloc[0])
            xs.append(j + (i - (len(controllers) - 1) / 2) * width)
            ys.append(float(rows["mean_delay_s"].iloc[0]) / ref)
            es.append(float(rows["ci95_delay_s"].iloc[0]) / ref)
        # a delay is positive: an interval wider than its mean (a seed that jammed) is
        # drawn down to a tenth of the bar, on a log scale that keeps small bars readable
        low = [min(e, 0.9 * y) for y, e in zip(ys, es, strict=True)]
        ax.bar(xs, ys, width, yerr=[low, es], label=controller, capsize=2)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(networks)), networks)
    ax.set_ylabel("mean delay / fixed timing's (log scale)")
    ax.legend(fontsize=7, ncol=3)
    ax.set_title("held-out resampled demand, 95% CI")
    fig.tight_layout()
    return results.save_figure(fig, path)


def write_leaderboard(plan: Benchmark, state: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Write the three files; return the ``--json`` document."""
    board = leaderboard(plan, state)
    wall_s = sum(float(stage.get("wall_s", 0.0)) for stages in state.values()
                 for stage in stages.values())
    from networks.files import write_text

    write_text(plan.folder / "leaderboard.md", _markdown(plan, board, wall_s))
    write_text(plan.folder / "leaderboard.csv", board.to_csv(index=False))
    png = _plot(board, plan.folder / "leaderboard.png")
    return {"folder": str(plan.folder), "wall_s": round(wall_s, 1),
            "networks": list(plan.networks), "protocol": plan.protocol,
            "leaderboard": [{k: results.plain(v) for k, v in row.items()}
                            for row in board.to_dict("records")],
            "plot": str(png) if png else None}
