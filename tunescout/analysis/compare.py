"""The recipe's two comparisons, re-run on a user's own study.

- **Batch size × learning rate**: the SFT recipe found large effective batches with low learning
  rates beat the common small-batch recipe. ``batch_lr_table`` lays a study's final scores out
  on that grid, per cohort and averaged across datasets (as scores relative to each dataset's
  best cell, so datasets with different metric scales can be averaged).
- **Stacked vs phased**: the recipe found training on all data at once scores as well as
  sequential phases and peaks with fewer samples. ``stacked_vs_phased`` pairs trials that differ
  only in ``strategy`` and reports final scores and samples-to-peak side by side.

Pure functions over the study's tables (``tunescout.study.export.store_tables``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tunescout.analysis.dynamics import final_scores
from tunescout.study.keys import COHORT

__all__ = ["BatchLrTables", "batch_lr_table", "stacked_vs_phased"]

GROUP = [COHORT[0], COHORT[2], COHORT[1]]
"""The cohort key in the order these tables are keyed by: (model, method) first, as rankings are."""


@dataclass(frozen=True)
class BatchLrTables:
    """Final scores on the batch size × learning rate grid."""

    scores: dict[tuple[str, str, str], pd.DataFrame]
    """(model, method, dataset) → final score, ``batch_size`` rows × ``learning_rate`` columns."""
    relative: dict[tuple[str, str], pd.DataFrame]
    """(model, method) → mean over datasets of the score relative to the dataset's best cell (1 =
    the best cell of every dataset), same layout."""
    long: pd.DataFrame
    """The cells in long form: ``model, method, dataset, metric, higher_is_better, batch_size,
    learning_rate, score, relative, n_trials``."""


def _axis(trials: pd.DataFrame, spec: Any, key: str) -> pd.Series:
    """A hyperparameter per trial: its grid column ``hp.<key>``, else the study's fixed value."""
    column = f"hp.{key}"
    fixed = spec.get("fixed", {}) if isinstance(spec, Mapping) else getattr(spec, "fixed", {})
    if column in trials:
        values = trials[column]
        return values.fillna(fixed[key]) if key in (fixed or {}) else values
    if key in (fixed or {}):
        return pd.Series(fixed[key], index=trials.index)
    raise ValueError(f"the study has no `{key}`: neither a grid axis ({column}) nor a fixed setting")


def _relative(score: pd.Series, best: pd.Series, higher: pd.Series) -> pd.Series:
    """Score as a fraction of the cohort's best cell (1 = best), whatever the metric's direction:
    score / best when higher is better (a negative score counts as 0), best / score when lower
    is better (a loss) — the ``ratio`` of ``cbs.relative_scores``, so the two tables agree. NaN
    where the ratio has no meaning: a non-positive best (or loss)."""
    score, best = score.astype(float), best.astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(higher, score.clip(lower=0) / best, best / score)
    valid = (best > 0) & (higher | (score > 0))
    return pd.Series(np.where(valid, ratio, np.nan), index=score.index, dtype=float)


def batch_lr_table(
    trials: pd.DataFrame,
    results: pd.DataFrame,
    spec: Any,
    statuses: Sequence[str] = ("completed",),
    agg: str = "mean",
) -> BatchLrTables:
    """Final scores on the batch size × learning rate grid, per cohort and across datasets.

    Args:
        trials, results: the study's tables (hyperparameters as ``hp.*`` columns).
        spec: the study spec (dataset metrics; ``fixed`` values for an axis not in the grid).
        statuses: trials that count. By default only completed ones: a stopped trial's score is
            that of a shorter run, not of its configuration.
        agg: how trials sharing a cell (seeds, other grid axes) combine: ``mean`` or ``max``.

    Returns:
        ``BatchLrTables``. Cells without a counted trial are NaN.

    Raises:
        ValueError: the study has no batch size or learning rate, or an unknown ``agg``.
    """
    if agg not in ("mean", "max"):
        raise ValueError(f"agg must be 'mean' or 'max', got {agg!r}")
    scores = final_scores(trials, results, spec)
    scores["batch_size"] = _axis(trials, spec, "batch_size").to_numpy()
    scores["learning_rate"] = _axis(trials, spec, "learning_rate").to_numpy()
    scores = scores[scores["status"].isin(statuses)]
    keys = [*GROUP, "metric", "higher_is_better", "batch_size", "learning_rate"]
    cells = scores.groupby(keys, sort=True).agg(score=("score", agg), n_trials=("score", "count")).reset_index()
    best = np.where(cells["higher_is_better"], cells.groupby(GROUP)["score"].transform("max"),
                    cells.groupby(GROUP)["score"].transform("min"))
    cells["relative"] = _relative(cells["score"], pd.Series(best, index=cells.index), cells["higher_is_better"])
    by_cohort = {key: g.pivot(index="batch_size", columns="learning_rate", values="score")
                 for key, g in cells.groupby(GROUP, sort=True)}
    relative = {key: g.pivot_table(index="batch_size", columns="learning_rate", values="relative",
                                   aggfunc="mean", dropna=False)
                for key, g in cells.groupby(["model", "method"], sort=True)}
    return BatchLrTables(by_cohort, relative, cells)


def _peak(results: pd.DataFrame, metric_of: Mapping[str, str], higher_of: Mapping[str, bool]) -> pd.DataFrame:
    """Per trial, the best recorded value of its metric and the samples seen when it was first
    reached: a later tie does not count, the run had already peaked."""
    rows = []
    if results.empty:
        return pd.DataFrame(columns=["trial_id", "peak", "samples_to_peak"])
    for tid, g in results[results["trial_id"].isin(metric_of)].groupby("trial_id"):
        g = g[(g["name"] == metric_of[tid]) & g["value"].notna()].sort_values("samples")
        if g.empty:
            continue
        values = g["value"].astype(float).to_numpy()
        i = int(np.argmax(values) if higher_of[tid] else np.argmin(values))  # first occurrence
        rows.append({"trial_id": tid, "peak": values[i], "samples_to_peak": int(g["samples"].iloc[i])})
    return pd.DataFrame(rows, columns=["trial_id", "peak", "samples_to_peak"])


STRATEGIES = ("stacked", "phased")
PAIR_COLUMNS = [*GROUP, "seed", "config", "metric", "higher_is_better",
                *(f"{c}_{s}" for c in ("score", "peak", "samples_to_peak", "samples") for s in STRATEGIES)]


def stacked_vs_phased(
    trials: pd.DataFrame, results: pd.DataFrame, spec: Any, statuses: Sequence[str] = ("completed",)
) -> pd.DataFrame:
    """Stacked and phased trials that differ only in ``strategy``, side by side.

    For each side: the final score, the peak (best recorded value of the dataset's metric, from
    every evaluation point in ``results``) and samples-to-peak — the samples seen at the first
    evaluation that reached the peak, the recipe's measure of sample efficiency. Record the
    metric during training (``eval_at_samples``) or every trial peaks at its end.

    Args:
        trials, results: the study's tables.
        spec: the study spec (dataset metrics).
        statuses: trials that count (completed by default, see ``batch_lr_table``).

    Returns:
        One row per pair: ``model, method, dataset, seed, config`` (the other hyperparameters),
        ``metric, higher_is_better`` and ``score_*``, ``peak_*``, ``samples_to_peak_*``,
        ``samples_*`` for ``stacked`` and ``phased`` (NaN where a side is missing). When the
        study has no strategy axis with both values the frame is empty and ``frame.attrs["reason"]``
        says why (``attrs["reason"]`` is "" otherwise).
    """
    values = set(trials["hp.strategy"].dropna()) if "hp.strategy" in trials else set()
    reason = ""
    if not values:
        reason = "the study's grid has no `strategy` axis; add `strategy: [stacked, phased]` to its grid"
    elif not set(STRATEGIES) <= values:
        reason = f"grid.strategy has {sorted(values)}; comparing needs both `stacked` and `phased`"
    if reason:
        empty = pd.DataFrame(columns=PAIR_COLUMNS)
        empty.attrs["reason"] = reason
        return empty
    scores = final_scores(trials, results, spec)
    data = trials.merge(scores[["trial_id", "metric", "higher_is_better", "score"]], on="trial_id")
    data = data[data["status"].isin(statuses) & data["hp.strategy"].isin(STRATEGIES)]
    peaks = _peak(results, dict(zip(data["trial_id"], data["metric"])),
                  dict(zip(data["trial_id"], data["higher_is_better"])))
    data = data.merge(peaks, on="trial_id", how="left")
    others = sorted(c for c in trials.columns if c.startswith("hp.") and c != "hp.strategy")
    data["config"] = [", ".join(f"{c[3:]}={v}" for c, v in zip(others, row) if not _missing(v))
                      for row in data[others].itertuples(index=False)] if others else ""
    if "seed" not in data:
        data["seed"] = 0
    key = [*GROUP, "seed", "config", "metric", "higher_is_better"]
    measures = ["score", "peak", "samples_to_peak", "samples"]
    stacked, phased = (data.loc[data["hp.strategy"] == s, key + measures].rename(
        columns={m: f"{m}_{s}" for m in measures}) for s in STRATEGIES)
    out = stacked.merge(phased, on=key, how="outer").sort_values(key)[PAIR_COLUMNS].reset_index(drop=True)
    out.attrs["reason"] = ""
    return out


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
