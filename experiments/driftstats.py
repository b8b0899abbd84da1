"""Drift statistics for monitoring: reference feature summaries, PSI and change detectors.

A *feature* is one reading kind of one detector as the controller sees it
(``"gp_in_LANE:queue"``). The reference keeps, per feature, the bin edges at the
quantiles of stationary episodes' values, the share of values in each bin (and of
missing values), their mean, standard deviation and count: enough for a
population-stability index (PSI) or a two-sample test against a window of new
readings. It also keeps, per watched series (:data:`SERIES`), its mean in each window of
the base period and the deviation around it, which put every series on one scale, window
for window, before the change detectors.

Alarms come from river's Page-Hinkley test (one-sided, upwards) on each standardised
series, window by window. Its settings are :data:`DELTA` and :data:`THRESHOLDS`,
calibrated by :func:`calibrate` on tuning seeds only.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simulator.sensors import Readings

KINDS = ("queue", "occupancy", "speed", "count")
"""The reading kinds that become features (``first_wait`` is off by default)."""
BINS = 10
"""Quantile bins per feature in a reference (fewer where values repeat)."""
EPS = 1e-4
"""Smallest share of a bin in PSI, so that an empty bin counts as rare rather than infinite."""
SCORE_QUANTILE = 0.9
"""The drift score of a window: this quantile of its per-feature PSI (a closure moves a
few detectors a lot, growth many a little; the 90th percentile sees both)."""
SERIES = {"delay": "delay_s", "queue": "queue_veh", "throughput": "throughput_veh_h",
          "volume": "volume_veh", "drift": "drift_score"}
"""The series the change detectors watch, and the window column each reads."""
DETECTED = tuple(SERIES)
"""The watched series' names."""

WARMUP_S = 600.0
"""Simulated seconds from the begin that the detectors do not see: the network fills up."""
MIN_WINDOWS = 6
"""Windows a detector sees before it may alarm (half an hour at 5 minutes)."""
DELTA = 1.0
"""Page-Hinkley's tolerated drift per window, in reference deviations. Chosen on tuning
seeds: with thresholds set as :data:`THRESHOLDS` are, 1.0 detected more of the changes
``growth=+30%@2h`` and ``closure=-186623965#16@2h`` on cologne8 (max-pressure, 3-hour runs,
seeds 10010-10014) within 15 minutes than 0.5 did (and the volume series was added for
growth then)."""
THRESHOLDS: dict[str, float] = {"delay": 3.11, "queue": 4.06, "throughput": 1.92,
                                 "volume": 2.93, "drift": 5.27}
"""Page-Hinkley thresholds (lambda) per series, in reference deviations.

Calibrated by :func:`calibrate` with :data:`CALIBRATION`: max-pressure on cologne8, five
stationary 8-hour runs on tuning seeds 10010-10014 (resampled demand, 5-minute windows,
the reference built on tuning seeds 10000-10001); each threshold is the highest statistic
its series reached there (margin 1.0: no false alarm in those 40 simulated hours). The
evaluation seeds 0..N-1 played no part.
"""
STD_FLOOR = 0.1
"""A reference standard deviation is at least this share of the reference mean (and of 1),
so that a near-constant reference series does not turn noise into large z-scores."""


def feature_names(detector_ids: Sequence[str], kinds: Sequence[str] = KINDS) -> list[str]:
    """``DETECTOR:KIND`` for every detector and kind, kind by kind."""
    return [f"{d}:{k}" for k in kinds for d in detector_ids]


def features(readings: Readings, kinds: Sequence[str] = KINDS) -> np.ndarray:
    """One reading as a feature vector, kind by kind (NaN where a value is missing)."""
    return np.concatenate([np.asarray(getattr(readings, k), dtype=float) for k in kinds])


def _edges(values: np.ndarray, bins: int) -> np.ndarray:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return np.empty(0)
    inner = np.quantile(finite, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    return np.unique(inner)


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares of values per bin (``len(edges) + 1`` bins), then the share missing."""
    finite = np.isfinite(values)
    counts = np.bincount(np.searchsorted(edges, values[finite], side="right"),
                         minlength=len(edges) + 1).astype(float)
    shares = np.append(counts, float((~finite).sum()))
    return shares / max(len(values), 1)


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population-stability index of two distributions over the same bins (shares)."""
    p = np.clip(np.asarray(reference, dtype=float), EPS, None)
    q = np.clip(np.asarray(current, dtype=float), EPS, None)
    return float(np.sum((q - p) * np.log(q / p)))


@dataclass(frozen=True)
class FeatureSummary:
    """One feature's reference distribution."""

    edges: list[float]
    shares: list[float]
    """Per bin (``len(edges) + 1``), then the share of missing values."""
    mean: float
    std: float
    count: int


@dataclass(frozen=True)
class Reference:
    """What the detectors reported in a stationary episode, and its per-window KPIs."""

    features: dict[str, FeatureSummary]
    kpis: dict[str, dict[str, Any]]
    """Per series of :data:`DETECTED`: ``{"mean": .., "std": .., "by_window": [..]}``, the
    mean of each window of the period and the deviation around it (:func:`baseline`)."""
    source: dict[str, Any] = field(default_factory=dict)
    """Where it came from: controller, network, seed, horizon, options."""

    def to_json(self) -> dict[str, Any]:
        """The reference as ``reference.json`` holds it."""
        return {"source": self.source, "kpis": self.kpis,
                "features": {name: vars(s) for name, s in self.features.items()}}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Reference:
        """A reference read back from :meth:`to_json`'s document.

        Raises:
            KeyError, TypeError, ValueError: The document is not a reference.
        """
        feats = {str(n): FeatureSummary([float(e) for e in s["edges"]],
                                        [float(x) for x in s["shares"]], float(s["mean"]),
                                        float(s["std"]), int(s["count"]))
                 for n, s in dict(doc["features"]).items()}
        kpis = {str(k): {"mean": float(v["mean"]), "std": float(v["std"]),
                         "by_window": [float(x) for x in v["by_window"]]}
                for k, v in dict(doc["kpis"]).items()}
        return cls(feats, kpis, dict(doc.get("source", {})))

    def window_psi(self, names: Sequence[str], samples: np.ndarray) -> np.ndarray:
        """Per-feature PSI of a window's samples (rows: steps, columns: ``names``).

        Features the reference does not hold are NaN.
        """
        out = np.full(len(names), math.nan)
        for j, name in enumerate(names):
            summary = self.features.get(name)
            if summary is not None:
                current = _shares(samples[:, j], np.asarray(summary.edges))
                out[j] = psi(np.asarray(summary.shares), current)
        return out

    def standardise(self, series: str, value: float, window: int) -> float:
        """``value`` of window ``window`` in reference deviations from that window's mean.

        ``window`` counts from the scenario's begin; the reference's period repeats.
        """
        ref = self.kpis[series]
        by_window = ref["by_window"]
        mean = by_window[window % len(by_window)]
        return (value - mean) / floor_std(ref["mean"], ref["std"])


def floor_std(mean: float, std: float) -> float:
    """The standard deviation used for z-scores (at least :data:`STD_FLOOR` of the mean and 1)."""
    return max(std, STD_FLOOR * max(abs(mean), 1.0))


def summarise(names: Sequence[str], samples: np.ndarray, groups: np.ndarray,
              kpis: Mapping[str, np.ndarray], source: Mapping[str, Any],
              bins: int = BINS) -> Reference:
    """The reference of stationary episodes: their readings and their window KPIs.

    Args:
        names: The features, one per column of ``samples``.
        samples: The readings of every episode, one row per reading.
        groups: Each row's episode and window as ``episode * windows + window``.
        kpis: Per series, one row per episode and one column per window of the period.
        source: Where the episodes came from.
        bins: Quantile bins per feature.

    Features that never had a value (an exit detector's queue) are left out. The drift
    score of each episode's window against the whole reference becomes the baseline of
    the ``drift`` series.
    """
    feats = {}
    for j, name in enumerate(names):
        column = samples[:, j]
        finite = column[np.isfinite(column)]
        if not finite.size:
            continue
        edges = _edges(column, bins)
        feats[name] = FeatureSummary([float(e) for e in edges],
                                     [float(s) for s in _shares(column, edges)],
                                     float(finite.mean()), float(finite.std()), int(finite.size))
    shape = next(iter(kpis.values())).shape
    partial = Reference(feats, {}, dict(source))
    drift = np.array([drift_score(partial.window_psi(names, samples[groups == g]))
                      for g in range(shape[0] * shape[1])]).reshape(shape)
    stats = {series: baseline(values) for series, values in {**kpis, "drift": drift}.items()}
    return Reference(feats, stats, dict(source))


def baseline(values: np.ndarray) -> dict[str, Any]:
    """A series' baseline: its mean per window of the period and the pooled deviation.

    ``values`` holds one row per episode, one column per window of the period; the
    deviation is that of each value from its window's mean (with as many degrees of
    freedom lost as windows), so the profile within the period is not counted as noise.
    """
    v = np.asarray(values, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a window without any value
        by_window = np.nanmean(v, axis=0)
    overall = float(np.nanmean(v)) if np.isfinite(v).any() else 0.0
    by_window = np.where(np.isfinite(by_window), by_window, overall)
    residual = (v - by_window)[np.isfinite(v)]
    dof = residual.size - v.shape[1]
    std = float(np.sqrt(np.sum(residual**2) / dof)) if dof > 0 else 0.0
    return {"mean": overall, "std": std, "by_window": [float(x) for x in by_window]}


def drift_score(per_feature: np.ndarray) -> float:
    """A window's drift score: :data:`SCORE_QUANTILE` of its per-feature PSI."""
    finite = per_feature[np.isfinite(per_feature)]
    return float(np.quantile(finite, SCORE_QUANTILE)) if finite.size else math.nan


class Detectors:
    """One Page-Hinkley test per series of :data:`DETECTED`, fed one window at a time."""

    def __init__(self, thresholds: Mapping[str, float] | None = None,
                 delta: float = DELTA, min_windows: int = MIN_WINDOWS) -> None:
        from river.drift import PageHinkley

        chosen = {**THRESHOLDS, **(thresholds or {})}
        self.tests = {name: PageHinkley(min_instances=min_windows, delta=delta,
                                        threshold=chosen[name], alpha=1.0, mode="up")
                      for name in DETECTED}

    def statistic(self, name: str) -> float:
        """The upward Page-Hinkley statistic of a series' test after its last update."""
        test = self.tests[name]
        return float(test._sum_increase - test._min_increase)  # noqa: SLF001 - river keeps it

    def update(self, values: Mapping[str, float]) -> dict[str, bool]:
        """Feed one window's standardised values; which tests alarm at it.

        A missing value (no vehicle arrived in the window) is skipped by its test.
        """
        fired = {}
        for name, test in self.tests.items():
            value = values.get(name, math.nan)
            if math.isfinite(value):
                test.update(value)
                fired[name] = bool(test.drift_detected)
            else:
                fired[name] = False
        return fired


def alarms_of(series: Mapping[str, Sequence[float]],
              thresholds: Mapping[str, float] | None = None) -> dict[str, list[int]]:
    """The windows at which each test alarms over whole standardised series."""
    detectors = Detectors(thresholds)
    n = max((len(v) for v in series.values()), default=0)
    out: dict[str, list[int]] = {name: [] for name in DETECTED}
    for i in range(n):
        fired = detectors.update({k: float(v[i]) for k, v in series.items() if i < len(v)})
        for name, hit in fired.items():
            if hit:
                out[name].append(i)
    return out


@dataclass(frozen=True)
class Verdict:
    """Alarms of seeds judged against the change points."""

    per_seed: list[dict[str, Any]] = field(default_factory=list)
    false_alarms: int = 0
    hours: float = 0.0
    detected_within: dict[str, bool] = field(default_factory=dict)


def judge(seeds: Sequence[Any], change_points: Sequence[tuple[float, str]],
          horizon_s: float, within_s: float = 900.0) -> Verdict:
    """False alarms (before the first change) and the first alarm after each change.

    ``seeds`` are :class:`experiments.monitor.SeedResult` (``seed``, ``alarms``, ``ends``,
    ``wall_s``); a change counts as detected when every seed alarms after it within
    ``within_s``.
    """
    first = min((t for t, _ in change_points), default=math.inf)
    per_seed, false_total = [], 0
    detected = {label: True for _, label in change_points}
    for result in seeds:
        times = sorted(a["time_s"] for a in result.alarms)
        false = [t for t in times if t <= first]
        false_total += len(false)
        changes = []
        for at, label in change_points:
            after = [a for a in sorted(result.alarms, key=lambda a: a["time_s"])
                     if a["time_s"] > at]
            hit = after[0] if after else None
            delay = hit["time_s"] - at if hit else None
            detected[label] = detected[label] and delay is not None and delay <= within_s
            changes.append({"change": label, "at_s": at,
                            "first_alarm_s": hit["time_s"] if hit else None,
                            "detector": hit["detector"] if hit else None, "delay_s": delay})
        per_seed.append({"seed": result.seed, "alarms": len(times), "false_alarms": len(false),
                         "changes": changes, **result.ends, "wall_s": result.wall_s})
    return Verdict(per_seed, false_total, len(seeds) * horizon_s / 3600.0, detected)


# ------------------------------------------------------------------ calibration
CALIBRATION = {"network": "cologne8", "controller": "max-pressure", "hours": 8.0,
               "stationary_seeds": tuple(range(10_010, 10_015)), "margin": 1.0}
"""How :data:`THRESHOLDS` were chosen (:func:`calibrate` reruns it): stationary runs of
the controller on tuning seeds, never the evaluation seeds 0..N-1."""


def statistic_path(values: Sequence[float], delta: float = DELTA,
                   min_windows: int = MIN_WINDOWS) -> list[float]:
    """The upward Page-Hinkley statistic after each finite value, the test never firing."""
    from river.drift import PageHinkley

    test = PageHinkley(min_instances=min_windows, delta=delta, threshold=math.inf, alpha=1.0,
                       mode="up")
    path = []
    for value in values:
        if math.isfinite(value):
            test.update(value)
            n = test._x_mean.n  # noqa: SLF001 - river keeps it
            path.append(test._sum_increase - test._min_increase if n >= min_windows else 0.0)  # noqa: SLF001
    return path


def thresholds_from(stationary: Sequence[Mapping[str, Sequence[float]]],
                    margin: float) -> dict[str, float]:
    """The smallest threshold per series that no stationary run reaches, times ``margin``.

    ``stationary`` holds each run's standardised series (the windows the detectors see).
    """
    # rounded up, so that the value written down stays above every statistic seen
    return {name: math.ceil(100 * margin * max(max(statistic_path(run[name]), default=0.0)
                                               for run in stationary)) / 100
            for name in DETECTED}


def calibrate(folder: Any, calibration: Mapping[str, Any] = CALIBRATION) -> dict[str, float]:
    """Rerun the calibration: monitor stationary runs on tuning seeds, derive thresholds.

    Writes the runs (``monitor.parquet`` etc.) into ``folder``; returns the thresholds to
    write into :data:`THRESHOLDS`.
    """
    from pathlib import Path

    from experiments import monitor
    from networks import get
    from networks.drift import Drift

    base = get(calibration["network"])
    options = monitor.monitor_options(base, calibration["controller"], "resample")
    drift = Drift.parse("", hours=float(calibration["hours"])).check(base)
    plan = monitor.plan_monitor(
        base, drift.scenario(base), calibration["controller"], seeds=0,
        base_options=options, options=options.model_copy(update={"drift": drift}),
        window_min=5, out=Path(folder), overwrite=True)
    plan = dataclasses.replace(plan, seeds=list(calibration["stationary_seeds"]))
    result = monitor.run_monitor(plan)
    runs = [{name: [v for v, s in zip(seed.windows[f"{name}_z"], seed.windows["start_s"],
                                       strict=True) if s >= WARMUP_S]
             for name in DETECTED} for seed in result.seeds]
    return thresholds_from(runs, float(calibration["margin"]))
