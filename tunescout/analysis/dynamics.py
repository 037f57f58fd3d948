"""Did early training dynamics predict the final score, and what would stopping have saved?

The SFT recipe claims that, within a cohort (same model, dataset and method), runs with a lower
gradient norm and a *higher* training loss early on end up better. A user who ran a study can
check that claim on their own data here (``dynamics_correlations``) and, on the trials that ran
to the end, replay any stopping rule to see how much compute it would have saved and how much
final score it would have cost (``replay_stopping``). Everything is a pure function of the
study's tables (``tunescout.study.export.store_tables``), so a report can be rebuilt from an
exported CSV as well as from a live store.

The early window and the rule replay reuse ``window_stats`` and ``build_rule`` from
``tunescout.stopping.rules``: the analysis must judge exactly what the sweep's rule judged, or
"the rule would have saved X" would be a statement about some other rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from tunescout.evaluate.metrics import get_metric
from tunescout.study.keys import COHORT
from tunescout.study.keys import dataset_metric
from tunescout.stopping.rules import rung_samples, window_start, window_stats

__all__ = [
    "bootstrap_ci",
    "dataset_metrics",
    "dynamics_correlations",
    "early_signals",
    "final_scores",
    "planned_samples",
    "records_by_trial",
    "signal_directions",
    "signals_advice",
    "spearman",
    "suggest_signals",
    "survivor_note",
]

MIN_COHORT = 3
"""Fewer trials than this give no meaningful rank correlation (two points always correlate ±1)."""


# --- inputs ------------------------------------------------------------------------------


def dataset_metrics(spec: Any) -> list[tuple[str, str]]:
    """``(name, metric)`` of every dataset, from a spec dict (``json.loads(store.study()['spec'])``),
    a ``StudySpec``, or the list of datasets itself (dicts or ``DatasetSpec``s)."""
    items = spec.get("datasets", []) if isinstance(spec, Mapping) else getattr(spec, "datasets", spec)
    out = []
    for d in items:
        out.append((d["name"] if isinstance(d, Mapping) else d.name, dataset_metric(d)))
    return out


def records_by_trial(telemetry: pd.DataFrame) -> dict[str, list[dict]]:
    """Each trial's step records in step order, NaN turned into None as the driver's records have it."""
    if telemetry.empty:
        return {}
    frame = telemetry.sort_values(["trial_id", "step"]).astype(object)
    frame = frame.where(pd.notna(frame), None)
    return {tid: g.to_dict("records") for tid, g in frame.groupby("trial_id", sort=False)}


def planned_samples(row: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> int | None:
    """Planned samples of a trial; for a trial without a plan, the samples its last record saw."""
    planned = row.get("planned_samples")
    if planned is not None and pd.notna(planned) and planned >= 1:
        return int(planned)
    return int(records[-1]["samples"]) if records else None


def early_signals(
    telemetry: pd.DataFrame, trials: pd.DataFrame, window: float = 0.1, rung: float | None = None
) -> pd.DataFrame:
    """Per trial, mean gradient norm and mean training loss over an early window of training.

    The window is measured in samples, as a fraction of each trial's own planned samples, so
    trials with different batch sizes are compared at the same share of their training (the
    recipe's unit), not at the same step count.

    Args:
        telemetry: per-step records (``trial_id, step, samples, loss, grad_norm``).
        trials: one row per trial (``trial_id, model, dataset, method, status, planned_samples``).
        window: fraction of planned samples the window covers.
        rung: fraction at which the window ends (the rung a rule judges at); None = ``window``,
            i.e. the window is the first ``window`` of training.

    Returns:
        One row per trial: cohort columns, ``status``, ``window_start``/``window_end`` (samples),
        ``reached`` (the telemetry got to the window's end) and ``grad_norm``/``loss`` (NaN when
        not reached or no finite value in the window).

    Raises:
        ValueError: fractions outside ``0 < window <= rung <= 1``.
    """
    end_frac = window if rung is None else rung
    if not (0 < window <= end_frac <= 1):
        raise ValueError(f"need 0 < window <= rung <= 1, got window={window!r}, rung={rung!r}")
    records = records_by_trial(telemetry)
    rows = []
    for t in trials.to_dict("records"):
        recs = records.get(t["trial_id"], [])
        planned = planned_samples(t, recs)
        row = {k: t.get(k) for k in ("trial_id", *COHORT, "status")}
        if planned is None:
            rows.append({**row, "window_start": np.nan, "window_end": np.nan, "reached": False,
                         "grad_norm": np.nan, "loss": np.nan})
            continue
        # rounded as the stopping rules place a rung's window, so this is the window a rule judged
        end = rung_samples(end_frac, planned)
        start = window_start(end_frac, window, planned)
        reached = bool(recs) and recs[-1]["samples"] >= end
        grad, loss = window_stats(recs, start, end) if reached else (None, None)
        rows.append({**row, "window_start": start, "window_end": end, "reached": reached,
                     "grad_norm": np.nan if grad is None else grad, "loss": np.nan if loss is None else loss})
    columns = ["trial_id", *COHORT, "status", "window_start", "window_end", "reached", "grad_norm", "loss"]
    return pd.DataFrame(rows, columns=columns)


def final_scores(trials: pd.DataFrame, results: pd.DataFrame, spec_datasets: Any) -> pd.DataFrame:
    """Per trial, the final value of its dataset's task metric and the metric's direction.

    "Final" is the value recorded with the most samples seen: a study records the metric at
    evaluation points during training and once at the end, and the end is what a sweep keeps.

    Args:
        trials: one row per trial (``trial_id, model, dataset, method, status``).
        results: ``trial_id, name, value, samples``.
        spec_datasets: the study's datasets (or the whole spec), each with ``name`` and ``metric``.

    Returns:
        One row per trial: cohort columns, ``status``, ``metric``, ``higher_is_better``,
        ``score`` (NaN without a result) and ``score_samples``.

    Raises:
        ValueError: a trial's dataset is not in the spec, or an unregistered metric.
    """
    metric_of = dict(dataset_metrics(spec_datasets))
    columns = ["trial_id", *COHORT, "status", "metric", "higher_is_better", "score", "score_samples"]
    if trials.empty:
        return pd.DataFrame(columns=columns)
    missing = sorted(set(trials.get("dataset", pd.Series(dtype=object))) - set(metric_of))
    if missing:
        raise ValueError(f"datasets {missing} of the trials are not in the study spec ({sorted(metric_of)})")
    base = trials[["trial_id", *COHORT, "status"]].copy()
    base["metric"] = base["dataset"].map(metric_of)
    base["higher_is_better"] = base["metric"].map(lambda m: get_metric(m).higher_is_better).astype(bool)
    if results.empty:
        return base.assign(score=np.nan, score_samples=np.nan)
    hits = results.merge(base[["trial_id", "metric"]], on="trial_id")
    last = hits[hits["name"] == hits["metric"]].sort_values("samples").groupby("trial_id").tail(1)
    last = last[["trial_id", "value", "samples"]].rename(columns={"value": "score", "samples": "score_samples"})
    out = base.merge(last, on="trial_id", how="left")
    out["score"] = out["score"].astype(float)
    return out[columns]


# --- rank correlation --------------------------------------------------------------------


def _ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the average of the positions they span."""
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse]


def _pairs(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of the same length, got shapes {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def spearman(x: Any, y: Any) -> float:
    """Spearman's rank correlation: Pearson's correlation of average ranks (ties share ranks).

    Pairs where either value is NaN or infinite are dropped (a trial without a score or a
    signal says nothing about the relation). NaN with fewer than two pairs or a constant side.
    """
    x, y = _pairs(x, y)
    if len(x) < 2:
        return math.nan
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return math.nan if denom == 0 else float(np.clip(rx @ ry / denom, -1.0, 1.0))


def _boot_rhos(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """Spearman of ``n`` resamples of the pairs (drawn with replacement); NaN where a resample is
    constant on one side."""
    idx = rng.integers(0, len(x), size=(n, len(x)))
    return np.array([spearman(x[i], y[i]) for i in idx])


def _interval(rhos: np.ndarray, alpha: float) -> tuple[float, float]:
    rhos = rhos[np.isfinite(rhos)]
    if not len(rhos):
        return math.nan, math.nan
    lo, hi = np.quantile(rhos, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _check_boot(n: int, alpha: float) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (bootstrap resamples) must be a positive int, got {n!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def bootstrap_ci(x: Any, y: Any, n: int = 2000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile confidence interval of Spearman's rho, resampling trials (pairs) with replacement.

    A cohort of a study is a handful of trials, so rho alone overstates what is known; the
    interval shows whether "lower gradient norm ends better" is evidence or noise. Deterministic
    for a seed. Resamples that are constant on one side have no rho and are left out.

    Returns:
        ``(low, high)``; NaNs with fewer than ``MIN_COHORT`` finite pairs.
    """
    _check_boot(n, alpha)
    x, y = _pairs(x, y)
    if len(x) < MIN_COHORT:
        return math.nan, math.nan
    return _interval(_boot_rhos(x, y, np.random.default_rng(seed), n), alpha)


def dynamics_correlations(
    telemetry: pd.DataFrame,
    trials: pd.DataFrame,
    results: pd.DataFrame,
    spec: Any,
    window: float = 0.1,
    only_completed: bool = True,
    *,
    rung: float | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Per cohort, how well the early window's gradient norm and loss rank-predict the final score.

    Signs are oriented so that a **positive rho means the recipe's claim holds**:
    ``rho_lowgrad_better`` > 0 means lower early gradient norm went with a better final score,
    ``rho_highloss_better`` > 0 means higher early loss went with a better final score ("better"
    honours the metric's direction). Each comes with a bootstrap percentile CI.

    The ``pooled`` row is the mean of the cohort rhos weighted by their trial counts, with a CI
    from resampling trials within each cohort. Cohorts are averaged rather than their trials
    pooled because loss and gradient-norm scales differ between models and datasets: the claim
    is about ranks *within* a cohort, and each cohort answers it separately.

    Args:
        telemetry, trials, results: the study's tables.
        spec: the study spec (its ``datasets`` name each dataset's metric).
        window, rung: the early window, as in ``early_signals``.
        only_completed: use only trials that ran to the end; a stopped trial's score is that of a
            shorter run, which would flatter any signal that stopped it.
        n_boot, seed, alpha: bootstrap resamples, seed, and 1 − confidence level.

    Returns:
        One row per cohort (``level`` = "cohort") and one ``pooled`` row: ``model, dataset,
        method, metric, n, cohorts``, each rho and ``*_ci_lo``/``*_ci_hi``. Cohorts with fewer than
        three usable trials have NaN rhos and their ``n``; they are left out of the pooled row.
    """
    _check_boot(n_boot, alpha)
    data = early_signals(telemetry, trials, window, rung).merge(
        final_scores(trials, results, spec)[["trial_id", "metric", "higher_is_better", "score"]], on="trial_id")
    if only_completed:
        data = data[data["status"] == "completed"]
    data = data[data["reached"] & data["score"].notna()]
    oriented = np.where(data["higher_is_better"], data["score"], -data["score"])
    data = data.assign(oriented=oriented.astype(float), neg_grad=-data["grad_norm"].astype(float))
    signals = {"lowgrad": "neg_grad", "highloss": "loss"}
    rng = np.random.default_rng(seed)
    rows, boots = [], {k: [] for k in signals}
    for key, g in data.groupby(list(COHORT), sort=True):
        row = {"level": "cohort", **dict(zip(COHORT, key)), "metric": g["metric"].iloc[0], "n": len(g), "cohorts": 1}
        for name, col in signals.items():
            rho, lo, hi = math.nan, math.nan, math.nan
            x, y = _pairs(g[col], g["oriented"])
            if len(g) >= MIN_COHORT and len(x) >= MIN_COHORT:
                rho = spearman(x, y)
                draws = _boot_rhos(x, y, rng, n_boot)
                lo, hi = _interval(draws, alpha)
                if math.isfinite(rho):
                    boots[name].append((len(x), rho, draws))
            row.update({f"rho_{name}_better": rho, f"{name}_ci_lo": lo, f"{name}_ci_hi": hi})
        rows.append(row)
    pooled: dict[str, Any] = {"level": "pooled", "model": "all", "dataset": "all", "method": "all",
                              "metric": ",".join(sorted(data["metric"].unique())),
                              "n": sum(r["n"] for r in rows if r["n"] >= MIN_COHORT),
                              "cohorts": sum(r["n"] >= MIN_COHORT for r in rows)}
    for name in signals:
        parts = boots[name]
        rho, lo, hi = math.nan, math.nan, math.nan
        if parts:
            weights = np.array([w for w, _, _ in parts], dtype=float)
            rho = float(np.average([r for _, r, _ in parts], weights=weights))
            draws = np.vstack([d for _, _, d in parts])  # cohorts × resamples
            ok = np.isfinite(draws)
            with np.errstate(invalid="ignore"):  # a resample where every cohort was constant: NaN, dropped
                mean = (np.where(ok, draws, 0) * weights[:, None]).sum(0) / (ok * weights[:, None]).sum(0)
            lo, hi = _interval(mean, alpha)
        pooled.update({f"rho_{name}_better": rho, f"{name}_ci_lo": lo, f"{name}_ci_hi": hi})
    columns = ["level", *COHORT, "metric", "n", "cohorts", "rho_lowgrad_better", "lowgrad_ci_lo", "lowgrad_ci_hi",
               "rho_highloss_better", "highloss_ci_lo", "highloss_ci_hi"]
    frame = pd.DataFrame([*rows, pooled], columns=columns)
    if only_completed:
        left_out = int((trials["status"] != "completed").sum()) if "status" in trials else 0
        frame.attrs["note"] = survivor_note(spec, left_out, "correlations")
    return frame


_SIGNAL_COLUMNS = {"grad_norm": ("lowgrad", "lower", "higher"), "loss": ("highloss", "higher", "lower")}
"""signal → (its column stem in :func:`dynamics_correlations`, the direction a positive rho means,
the direction a negative one means)."""


def signal_directions(correlations: pd.DataFrame) -> pd.DataFrame:
    """Which direction of each early signal went with a better final score, per cohort and pooled.

    A direction *held* when the bootstrap interval of its rho excludes zero; otherwise it is
    ``unclear``. This is what a study teaches the next one about its ``dynamics`` signals.

    Args:
        correlations: the frame of :func:`dynamics_correlations`.

    Returns:
        One row per row of ``correlations`` and signal: ``level, model, dataset, method, n,
        signal, rho`` (positive: lower is better for ``grad_norm``, higher for ``loss``, as in
        the recipe), ``ci_lo, ci_hi, held`` (``lower``, ``higher`` or ``unclear``).
    """
    rows = []
    for r in correlations.to_dict("records"):
        for signal, (stem, positive, negative) in _SIGNAL_COLUMNS.items():
            rho, lo, hi = r[f"rho_{stem}_better"], r[f"{stem}_ci_lo"], r[f"{stem}_ci_hi"]
            held = positive if lo > 0 else negative if hi < 0 else "unclear"  # NaN compares False: unclear
            rows.append({"level": r["level"], **{k: r[k] for k in COHORT}, "n": r["n"], "signal": signal,
                         "rho": rho, "ci_lo": lo, "ci_hi": hi, "held": held})
    return pd.DataFrame(rows, columns=["level", *COHORT, "n", "signal", "rho", "ci_lo", "ci_hi", "held"])


def suggest_signals(directions: pd.DataFrame) -> dict[str, str] | None:
    """The ``signals:`` of a ``dynamics`` rule for the next study: each signal whose direction held
    when pooled over this study's cohorts; None when none did (keep the recipe's, or stop by
    evaluations with ``asha``)."""
    pooled = directions[(directions["level"] == "pooled") & (directions["held"] != "unclear")]
    return {r["signal"]: r["held"] for r in pooled.to_dict("records")} or None


def signals_advice(suggested: dict[str, str] | None) -> str:
    """One line for ``tunescout analyze``: the stopping rule to try next, as YAML flow."""
    if not suggested:
        return ("suggested for the next study: no early signal's direction held when pooled; keep the recipe's "
                "signals, or judge on evaluations (rule: asha)")
    shown = ", ".join(f"{k}: {v}" for k, v in suggested.items())
    return f"suggested for the next study: stopping: {{rule: dynamics, signals: {{{shown}}}}}"


def survivor_note(spec: Any, excluded: int, what: str) -> str:
    """What a replay or a correlation over completed trials cannot see, in one sentence ('' if
    nothing): a study run with a stopping rule has full curves only for the trials it kept."""
    rule = (spec.get("stopping") if isinstance(spec, Mapping) else getattr(spec, "stopping", None)) or {"rule": "none"}
    if rule.get("rule", "none") == "none" and not excluded:
        return ""
    shown = ", ".join(f"{k}: {v}" for k, v in rule.items())
    ran = f"ran with stopping rule `{{{shown}}}`" if rule.get("rule", "none") != "none" else "has unfinished trials"
    return (f"These {what} use only the trials that ran to the end: this study {ran}, so {excluded} trials "
            "(stopped, diverged, failed or unfinished) are left out and the results describe the survivors; "
            "they are exact only on a study run with `stopping: none`.")
