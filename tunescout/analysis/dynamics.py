"""Did early training dynamics predict the final score, and what would stopping have saved?

The SFT recipe claims that, within a cohort (same model, dataset and method), runs with a lower
gradient norm and a *higher* training loss early on end up better. A user who ran a study can
check that claim on their own data here (``dynamics_correlations``) and, on the trials that ran
to the end, replay any stopping rule to see how much compute it would have saved and how much
final score it would have cost (``replay_stopping``). Everything is a pure function of the
study's tables (``tunescout.study.export.store_tables``), so a report can be rebuilt from an
exported CSV as well as from a live store.

The early window and the rule replay reuse ``window_stats`` and ``build_rule`` from
``tunescout.study.stopping``: the analysis must judge exactly what the sweep's rule judged, or
"the rule would have saved X" would be a statement about some other rule.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tunescout.evaluate.metrics import get_metric
from tunescout.study.stopping import StoppingRule, TrialProgress, build_rule, window_stats

__all__ = [
    "StoppingReplay",
    "bootstrap_ci",
    "default_replay_rules",
    "dynamics_correlations",
    "early_signals",
    "final_scores",
    "replay_stopping",
    "rule_label",
    "spearman",
]

COHORT = ["model", "dataset", "method"]
MIN_COHORT = 3
"""Fewer trials than this give no meaningful rank correlation (two points always correlate ±1)."""


# --- inputs ------------------------------------------------------------------------------


def _samples_at(fraction: float, planned: int) -> int:
    """Samples at which a fraction of training is reached, rounded exactly as the stopping rules
    round their rungs (product rounded first, then up), so the window analysed here is the window
    a rule at that rung judged. A test holds this equal to ``AshaRule.eval_points``."""
    return max(1, math.ceil(round(fraction * planned, 6)))


def _datasets(spec: Any) -> list[tuple[str, str]]:
    """``(name, metric)`` of every dataset, from a spec dict (``json.loads(store.study()['spec'])``),
    a ``StudySpec``, or the list of datasets itself (dicts or ``DatasetSpec``s)."""
    items = spec.get("datasets", []) if isinstance(spec, Mapping) else getattr(spec, "datasets", spec)
    out = []
    for d in items:
        name, metric = (d["name"], d.get("metric", "val_loss")) if isinstance(d, Mapping) else (d.name, d.metric)
        out.append((name, metric))
    return out


def _records(telemetry: pd.DataFrame) -> dict[str, list[dict]]:
    """Each trial's step records in step order, NaN turned into None as the driver's records have it."""
    if telemetry.empty:
        return {}
    frame = telemetry.sort_values(["trial_id", "step"]).astype(object)
    frame = frame.where(pd.notna(frame), None)
    return {tid: g.to_dict("records") for tid, g in frame.groupby("trial_id", sort=False)}


def _planned(row: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> int | None:
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
    records = _records(telemetry)
    rows = []
    for t in trials.to_dict("records"):
        recs = records.get(t["trial_id"], [])
        planned = _planned(t, recs)
        row = {k: t.get(k) for k in ("trial_id", *COHORT, "status")}
        if planned is None:
            rows.append({**row, "window_start": np.nan, "window_end": np.nan, "reached": False,
                         "grad_norm": np.nan, "loss": np.nan})
            continue
        end = _samples_at(end_frac, planned)
        start = max(0.0, round((end_frac - window) * planned, 6))  # as dynamics_scores places it
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
        ValueError: a trial's dataset is not in the spec. KeyError: an unregistered metric.
    """
    metric_of = dict(_datasets(spec_datasets))
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
    for key, g in data.groupby(COHORT, sort=True):
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
    return pd.DataFrame([*rows, pooled], columns=columns)


# --- replaying stopping rules --------------------------------------------------------------


def default_replay_rules() -> list[dict[str, Any]]:
    """The recipe's rule and ASHA at η ∈ {2, 3, 4}, judged at 10%, at 10% and 25%, or at 25%."""
    return [{"rule": rule, "rungs": rungs, "eta": eta}
            for rule in ("dynamics", "asha") for eta in (2, 3, 4) for rungs in ([0.1], [0.1, 0.25], [0.25])]


def rule_label(spec: Mapping[str, Any]) -> str:
    """A short, stable name for a rule spec, e.g. ``dynamics eta=2 rungs=[0.1]``."""
    params = " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(spec.items()) if k != "rule")
    return f"{spec.get('rule')} {params}".strip()


@dataclass(frozen=True)
class StoppingReplay:
    """What each rule would have done on the trials that ran to the end."""

    summary: pd.DataFrame
    """One row per rule: ``rule, spec, replayable, reason, n_cohorts, n_replayed, n_trials,
    n_stopped, tokens_used, tokens_full, token_fraction, compute_saved, mean_regret_rel,
    max_regret_rel, best_kept_rate`` (over the replayed cohorts)."""
    cohorts: pd.DataFrame
    """One row per rule × cohort: ``replayable, reason, n_trials, n_excluded, n_stopped, tokens_*,
    token_fraction, metric, best_score, best_kept_score, regret, regret_rel, best_kept``."""
    trials: pd.DataFrame
    """One row per rule × replayed trial: ``stopped, stop_step, stop_samples, tokens_used,
    tokens_full, score, reason``."""


def _arrival(ids: Sequence[str], recs: Mapping[str, list[dict]], planned: Mapping[str, int],
             order: str) -> Iterator[tuple[str, int]]:
    """(trial, record index) in the order the driver would receive them with every trial running
    at once. ``step``: round-robin by step (each trial's k-th record, trials in id order).
    ``progress``: by fraction of planned samples reached, ties in id order — as if trials trained
    samples at the same speed whatever their batch size."""
    if order == "step":
        for k in range(max(len(recs[t]) for t in ids)):
            yield from ((t, k) for t in ids if k < len(recs[t]))
    else:
        keyed = [(r["samples"] / planned[t], i, k, t) for i, t in enumerate(ids) for k, r in enumerate(recs[t])]
        yield from ((t, k) for _, _, k, t in sorted(keyed))


def _eval_of(rec: Mapping[str, Any], metric: float | None) -> dict | None:
    """The eval the driver derives from a record: its val_loss and the task metric taken with it."""
    if rec.get("val_loss") is None and metric is None:
        return None
    return {"samples": rec["samples"], "val_loss": rec.get("val_loss"), "metric": metric}


def _why_not(rule: StoppingRule, ids: Sequence[str], recs: Mapping[str, list[dict]], planned: Mapping[str, int],
             metric_at: Mapping[tuple[str, int], float]) -> str:
    """Why a cohort cannot be replayed under ``rule`` ('' if it can). Rules that read evaluations
    need one at the record that first reaches each rung, which exists only where the study asked
    for an evaluation at that sample count; judging on a later eval would replay another rule."""
    if not ids:
        return "no completed trials with telemetry"
    signal = getattr(rule, "signal", "val_loss")

    def value(t: str, rec: Mapping[str, Any]) -> float | None:
        return rec.get("val_loss") if signal == "val_loss" else metric_at.get((t, rec["samples"]))

    for t in ids:
        for point in rule.eval_points(planned[t]):
            rec = next((r for r in recs[t] if r["samples"] >= point), None)
            if rec is None or value(t, rec) is None:
                seen = [r["samples"] for r in recs[t] if value(t, r) is not None]
                return (f"{rule.name} needs {signal} at {point} samples (a rung of trial {t}, planned "
                        f"{planned[t]}), but the study recorded evaluations only at samples {seen}; "
                        f"sweep with eval_at_samples at the rungs to replay it")
    return ""


def _simulate(rule: StoppingRule, ids: Sequence[str], recs: Mapping[str, list[dict]], planned: Mapping[str, int],
              metric_at: Mapping[tuple[str, int], float], order: str) -> dict[str, tuple[int, str]]:
    """Feed the cohort's records to ``rule.decide`` as the sweep driver does; returns the trials
    it stopped, with the index of the record they stopped at and the rule's reason."""
    progress = {t: TrialProgress(t, planned[t], [], [], "running") for t in ids}
    cohort = list(progress.values())
    stopped: dict[str, tuple[int, str]] = {}
    for t, k in _arrival(ids, recs, planned, order):
        if t in stopped:
            continue
        tp, rec = progress[t], recs[t][k]
        tp.telemetry.append(rec)
        if (ev := _eval_of(rec, metric_at.get((t, rec["samples"])))) is not None:
            tp.evals.append(ev)
        reason = rule.decide(tp, cohort)
        if reason:
            stopped[t] = (k, reason)
            tp.status = "stopped"
        elif k == len(recs[t]) - 1:
            tp.status = "completed"
    return stopped


def replay_stopping(
    telemetry: pd.DataFrame,
    trials: pd.DataFrame,
    results: pd.DataFrame,
    spec: Any,
    rules: Sequence[Mapping[str, Any]] | None = None,
    order: str = "step",
) -> StoppingReplay:
    """Simulate stopping rules on the trials that ran to the end, as the sweep driver applies them.

    Only ``completed`` trials take part: they alone tell what a stopped trial would have scored.
    Each cohort's records are fed one by one (interleaved across trials, see ``order``) to
    ``build_rule(spec).decide(trial, cohort)``, the cohort's progress growing as records arrive
    and stopped trials keeping their partial telemetry, exactly as in a sweep. A stopped trial
    costs the tokens it had trained when stopped.

    Regret is the final score lost by keeping only the unstopped trials: (best final score of
    the cohort − best final score among the kept), oriented so it is ≥ 0 whatever the metric's
    direction; ``regret_rel`` divides it by |best|. The asynchronous rules never let a trial wait
    for another, so the arrival order changes which trials are stopped: the order is fixed and
    reported, not random.

    Args:
        telemetry, trials, results: the study's tables.
        spec: the study spec (dataset metrics for the final scores).
        rules: stopping rule specs (``{"rule": "dynamics", "rungs": [0.1], "eta": 3}``, …);
            None = ``default_replay_rules()``.
        order: ``step`` (round-robin by step) or ``progress`` (by fraction of planned samples).

    Returns:
        A ``StoppingReplay`` (summary per rule, per rule × cohort, per rule × trial). A rule that
        needs evaluations the study did not record is reported not replayable, with the reason.

    Raises:
        ConfigError: an invalid rule spec. ValueError: an unknown ``order``.
    """
    if order not in ("step", "progress"):
        raise ValueError(f"order must be 'step' or 'progress', got {order!r}")
    rules = default_replay_rules() if rules is None else list(rules)
    built = {rule_label(r): (dict(r), build_rule(r)) for r in rules}  # a bad spec fails before any work
    scores = final_scores(trials, results, spec).set_index("trial_id")
    records = _records(telemetry)
    metric_of = dict(_datasets(spec))
    dataset_of = dict(zip(trials["trial_id"], trials["dataset"]))
    metric_at = {} if results.empty else {
        (r["trial_id"], int(r["samples"])): r["value"] for r in results.to_dict("records")
        if r["trial_id"] in dataset_of and r["name"] == metric_of[dataset_of[r["trial_id"]]] and pd.notna(r["value"])}
    cohorts = []
    for key, g in trials.groupby(COHORT, sort=True):
        done = g[(g["status"] == "completed") & g["trial_id"].isin(records)]
        ids = sorted(done["trial_id"])
        planned = {r["trial_id"]: _planned(r, records[r["trial_id"]]) for r in done.to_dict("records")}
        cohorts.append((key, ids, planned, len(g) - len(ids)))
    cohort_rows, trial_rows = [], []
    for label, (_, rule) in built.items():
        for key, ids, planned, excluded in cohorts:
            row = {"rule": label, **dict(zip(COHORT, key)), "n_trials": len(ids), "n_excluded": excluded}
            reason = _why_not(rule, ids, records, planned, metric_at)
            if reason:
                cohort_rows.append({**row, "replayable": False, "reason": reason})
                continue
            stopped = _simulate(rule, ids, records, planned, metric_at, order)
            for t in ids:
                k, why = stopped.get(t, (len(records[t]) - 1, ""))
                trial_rows.append({"rule": label, "trial_id": t, **dict(zip(COHORT, key)), "stopped": t in stopped,
                                   "stop_step": records[t][k]["step"] if t in stopped else np.nan,
                                   "stop_samples": records[t][k]["samples"] if t in stopped else np.nan,
                                   "tokens_used": records[t][k]["tokens"], "tokens_full": records[t][-1]["tokens"],
                                   "score": scores.at[t, "score"], "reason": why})
            cohort_rows.append({**row, "replayable": True, "reason": "",
                                **_cohort_outcome(ids, stopped, records, scores)})
    cohort_frame = pd.DataFrame(cohort_rows, columns=[
        "rule", *COHORT, "replayable", "reason", "n_trials", "n_excluded", "n_stopped", "tokens_used", "tokens_full",
        "token_fraction", "metric", "best_score", "best_kept_score", "regret", "regret_rel", "best_kept"])
    summary = pd.DataFrame([_summarise(rspec, label, cohort_frame) for label, (rspec, _) in built.items()],
                           columns=SUMMARY_COLUMNS)
    trial_frame = pd.DataFrame(trial_rows, columns=["rule", "trial_id", *COHORT, "stopped", "stop_step", "stop_samples",
                                                    "tokens_used", "tokens_full", "score", "reason"])
    return StoppingReplay(summary, cohort_frame, trial_frame)


def _cohort_outcome(ids: Sequence[str], stopped: Mapping[str, Any], records: Mapping[str, list[dict]],
                    scores: pd.DataFrame) -> dict[str, Any]:
    """Tokens used against the full cohort's, and the final score the stops cost."""
    used = sum(records[t][stopped[t][0] if t in stopped else -1]["tokens"] for t in ids)
    full = sum(records[t][-1]["tokens"] for t in ids)
    sub = scores.loc[list(ids)]
    metric, higher = sub["metric"].iloc[0], bool(sub["higher_is_better"].iloc[0])
    sign = 1.0 if higher else -1.0
    oriented = sign * sub["score"].astype(float)
    kept = oriented[[t not in stopped for t in ids]]
    best = oriented.max()  # NaN when no trial has a score
    best_kept = kept.max() if kept.notna().any() else math.nan
    regret = best - best_kept
    return {"n_stopped": len(stopped), "tokens_used": used, "tokens_full": full,
            "token_fraction": used / full if full else math.nan, "metric": metric,
            "best_score": sign * best, "best_kept_score": sign * best_kept, "regret": regret,
            "regret_rel": regret / abs(best) if pd.notna(best) and best != 0 else math.nan,
            "best_kept": bool(regret == 0)}


SUMMARY_COLUMNS = ["rule", "spec", "replayable", "reason", "n_cohorts", "n_replayed", "n_trials", "n_stopped",
                   "tokens_used", "tokens_full", "token_fraction", "compute_saved", "mean_regret_rel",
                   "max_regret_rel", "best_kept_rate"]


def _summarise(spec: Mapping[str, Any], label: str, cohorts: pd.DataFrame) -> dict[str, Any]:
    """A rule's totals over the cohorts it could be replayed on."""
    mine = cohorts[cohorts["rule"] == label]
    done = mine[mine["replayable"]]
    reasons = mine.loc[~mine["replayable"], "reason"]
    used, full = done["tokens_used"].sum(), done["tokens_full"].sum()
    fraction = used / full if full else math.nan
    return {"rule": label, "spec": json.dumps(dict(spec), sort_keys=True), "replayable": len(done) > 0,
            "reason": reasons.iloc[0] if len(reasons) else "", "n_cohorts": len(mine), "n_replayed": len(done),
            "n_trials": int(done["n_trials"].sum()), "n_stopped": int(done["n_stopped"].sum()),
            "tokens_used": used, "tokens_full": full, "token_fraction": fraction, "compute_saved": 1 - fraction,
            "mean_regret_rel": done["regret_rel"].mean(), "max_regret_rel": done["regret_rel"].max(),
            "best_kept_rate": done["best_kept"].astype(float).mean() if len(done) else math.nan}
