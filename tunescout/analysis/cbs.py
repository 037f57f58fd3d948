"""Coverage-based Search (CBS): rank a grid's configurations so the top few *together* do well.

A configuration *covers* a dataset when its score there is within ``tau`` of the best score the
grid reached on that dataset (relative score ≥ ``tau``). CBS orders configurations greedily: first
the one covering the most datasets, then the one adding the most datasets not yet covered, and
so on; once nothing more can be covered, by how much each raises the best relative score of the
chosen set, averaged over datasets. A user then trains only the top 1–5 on a new dataset.

:func:`leave_one_out` checks that promise on the user's own grid: hold a dataset (or task type)
out, rank on the rest, and score the top-k on what was held out, next to simple baselines.

Conventions, applied everywhere here: relative scores live in [0, 1] (1 = the grid's best on that
dataset); a missing cell (a config never scored on a dataset) counts as 0 wherever a set of
configurations is scored — a configuration with no score did not give you a model there — and
is skipped where a single configuration's own mean is taken (tie-breaking).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from tunescout.analysis.table import validate_results

__all__ = [
    "best_on_average_order", "cbs_rank", "format_loo_summary", "format_rankings", "leave_one_out",
    "loo_summary", "multiple_defaults", "rank_results", "ranking_to_json", "rankings_to_json",
    "relative_scores", "split_groups",
]

log = logging.getLogger("tunescout.analysis")

GroupKey = tuple
GROUP_BY = ("model", "method")
_EPS = 1e-9  # rel = 0.95 * x / x can land a hair under 0.95; a config exactly at tau covers
_NDIGITS = 12  # tie-breaking compares rounded means, so float noise does not pick the winner
_WARNED_NOT_POSITIVE: set[tuple[str, float]] = set()  # (dataset, best) already warned about


def _group_names(group_by: Sequence[str] | str | None) -> tuple[str, ...]:
    if group_by is None:
        return ()
    return (group_by,) if isinstance(group_by, str) else tuple(group_by)


def split_groups(df: pd.DataFrame, group_by: Sequence[str] | str | None = GROUP_BY) -> dict[GroupKey, pd.DataFrame]:
    """Split a results table into the groups ranked separately (by default model × method).

    Rankings are per model and method because the best learning rate of LoRA is not that of full
    fine-tuning. Keys are tuples aligned with ``group_by`` (``None`` for a column the table does
    not have, so a key always zips with the names); ``group_by=None`` gives one group ``()``.
    """
    names = _group_names(group_by)
    present = [c for c in names if c in df.columns]
    if not present:
        return {tuple(None for _ in names): df}
    groups = {}
    for values, part in df.groupby(present, sort=True, dropna=False):
        found = dict(zip(present, values))
        groups[tuple(found.get(n) for n in names)] = part
    return groups


def relative_scores(df: pd.DataFrame, mode: str = "ratio") -> pd.DataFrame:
    """Config × dataset matrix of scores relative to the grid's best on each dataset.

    Why relative: datasets differ in scale (accuracy 0.9 on one is poor, 0.4 on another is the
    best anyone reached); coverage needs "close to the best achievable here".

    Args:
        df: a results table of one group (duplicate config × dataset rows, e.g. seeds, are averaged).
        mode: ``ratio``: score ÷ best for higher-is-better metrics and best ÷ score for
            lower-is-better ones (losses), so the best config gets 1.0 and a config half as good
            0.5; negative scores of a higher-is-better metric clip to 0. The ratio has no meaning
            when the best score is ≤ 0, so such a dataset falls back to ``minmax`` (with a warning).
            ``minmax``: worst config → 0, best → 1, linear in between; when all configs tie, 1.0.

    Returns:
        DataFrame indexed by ``config_id`` (sorted) with one column per dataset (sorted); NaN where
        a config has no score. Non-finite scores (a diverged loss) count as missing. Datasets on
        which no config has a score are dropped, with a warning: they cannot inform a ranking.

    Raises:
        ValueError: unknown mode, or a table that breaks the results contract.
    """
    if mode not in ("ratio", "minmax"):
        raise ValueError(f"mode must be 'ratio' or 'minmax', got {mode!r}")
    table = validate_results(df)
    table = table.assign(score=table["score"].where(np.isfinite(table["score"])))
    matrix = table.groupby(["config_id", "dataset"])["score"].mean().unstack("dataset")
    matrix = matrix.reindex(index=sorted(table["config_id"].unique()), columns=sorted(table["dataset"].unique()))
    higher = table.groupby("dataset")["higher_is_better"].first()
    empty = [d for d in matrix.columns if matrix[d].isna().all()]
    if empty:
        log.warning("no scores on dataset(s) %s; left out of the ranking", ", ".join(empty))
    rel = {}
    for d in (c for c in matrix.columns if c not in empty):
        col, hib = matrix[d].astype(float), bool(higher[d])
        best, worst = (col.max(), col.min()) if hib else (col.min(), col.max())
        if mode == "ratio" and best > 0:
            rel[d] = col.clip(lower=0) / best if hib else best / col
            continue
        if mode == "ratio" and (d, float(best)) not in _WARNED_NOT_POSITIVE:
            # Once per dataset and best score per process: held-out validation and the report
            # re-rank the same table many times, and a dozen copies would hide everything else.
            _WARNED_NOT_POSITIVE.add((d, float(best)))
            log.warning("dataset %s: best score %g is not positive, so a ratio is meaningless; using minmax", d, best)
        rel[d] = col.where(col.isna(), 1.0) if best == worst else (col - worst) / (best - worst)
    out = pd.DataFrame(rel, index=matrix.index, columns=[c for c in matrix.columns if c not in empty], dtype=float)
    out.index.name, out.columns.name = "config_id", "dataset"
    return out


def _own_means(values: np.ndarray) -> np.ndarray:
    """NaN-aware mean per row; a row with no value at all gets -inf so it sorts last."""
    counts = np.sum(~np.isnan(values), axis=1)
    sums = np.nansum(values, axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf)


def cbs_rank(rel: pd.DataFrame, tau: float = 0.95, top: int | None = None) -> pd.DataFrame:
    """Order configurations by Coverage-based Search.

    Step rule: the next config is the one covering (rel ≥ ``tau``) the most datasets not yet
    covered; ties go to the higher mean relative score on those newly covered datasets, then to
    the higher own mean over all datasets (missing cells skipped), then to the smaller config_id.
    When no remaining config covers anything new (all covered, or the rest cannot be), the next
    is the one raising ``mean_best_relative`` most (ties: own mean, then id), so the whole grid
    is ranked. A config with no scores at all always comes last.

    Args:
        rel: the matrix from :func:`relative_scores` (configs × datasets, NaN = missing).
        tau: coverage threshold in [0, 1]; a relative score equal to ``tau`` covers.
        top: stop after this many configs (the order of the first ``top`` is the same either way).

    Returns:
        DataFrame with ``rank`` (1-based), ``config_id``, ``newly_covered`` (list of datasets),
        ``cumulative_coverage`` (fraction of datasets covered by the top-k), ``mean_best_relative``
        (mean over datasets of the best relative score within the top-k, missing counted as 0;
        both curves are non-decreasing) and ``mean_relative`` (the config's own NaN-aware mean).

    Raises:
        ValueError: ``tau`` outside [0, 1], or a matrix with configs but no datasets.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau}")
    columns = ["rank", "config_id", "newly_covered", "cumulative_coverage", "mean_best_relative", "mean_relative"]
    values = rel.to_numpy(dtype=float)
    n, m = values.shape
    if n == 0:
        return pd.DataFrame(columns=columns)
    if m == 0:
        raise ValueError("cannot rank configurations on zero datasets")
    ids, datasets = [str(i) for i in rel.index], [str(c) for c in rel.columns]
    covers = np.where(np.isnan(values), False, values >= tau - _EPS)
    filled = np.nan_to_num(values, nan=0.0)
    own = _own_means(values)
    covered, best = np.zeros(m, dtype=bool), np.zeros(m)
    remaining, rows = set(range(n)), []
    for rank in range(1, (n if top is None else min(top, n)) + 1):
        new_counts = {i: int(np.sum(covers[i] & ~covered)) for i in remaining}
        if max(new_counts.values()) > 0:
            def key(i: int) -> tuple:
                new = covers[i] & ~covered
                on_new = float(values[i, new].mean()) if new.any() else 0.0
                return (-new_counts[i], -round(on_new, _NDIGITS), -round(own[i], _NDIGITS), ids[i])
        else:
            def key(i: int) -> tuple:
                gain = float(np.mean(np.maximum(best, filled[i]) - best))
                return (-round(gain, _NDIGITS), -round(own[i], _NDIGITS), ids[i])
        pick = min(remaining, key=key)
        remaining.remove(pick)
        new = covers[pick] & ~covered
        covered |= new
        best = np.maximum(best, filled[pick])
        rows.append({"rank": rank, "config_id": ids[pick], "newly_covered": [d for d, x in zip(datasets, new) if x],
                     "cumulative_coverage": float(covered.mean()), "mean_best_relative": float(best.mean()),
                     "mean_relative": float(own[pick]) if np.isfinite(own[pick]) else float("nan")})
    return pd.DataFrame(rows, columns=columns)


def best_on_average_order(rel: pd.DataFrame, top: int | None = None) -> list[str]:
    """Configs by mean relative score (missing = 0), best first, ties by id: the naive ranking
    CBS is measured against, since one good-on-average config can still miss whole task types."""
    means = rel.fillna(0.0).mean(axis=1).round(_NDIGITS)
    order = sorted(rel.index.astype(str), key=lambda c: (-means[c], c))
    return order if top is None else order[:top]


def multiple_defaults(rel: pd.DataFrame, top: int | None = None) -> list[str]:
    """Greedy portfolio of "multiple defaults" (Pfisterer et al., 2018).

    Each step adds the config that minimises the summed regret over datasets, where a dataset's
    regret is 1 − the best relative score within the portfolio (missing = regret 1). It optimises
    average closeness to the best rather than a count of datasets within ``tau``, which is why it
    can disagree with CBS. Ties: higher mean relative score, then id.
    """
    ids = [str(i) for i in rel.index]
    filled = rel.fillna(0.0).to_numpy(dtype=float)
    means = filled.mean(axis=1) if filled.shape[1] else np.zeros(len(ids))
    best, remaining, order = np.zeros(filled.shape[1]), set(range(len(ids))), []
    while remaining and (top is None or len(order) < top):
        pick = min(remaining, key=lambda i: (round(float(np.sum(1 - np.maximum(best, filled[i]))), _NDIGITS),
                                             -round(float(means[i]), _NDIGITS), ids[i]))
        remaining.remove(pick)
        best = np.maximum(best, filled[pick])
        order.append(ids[pick])
    return order


def _expected_best_of_k(held: np.ndarray, k: int, n_random: int | None, rng: np.random.Generator) -> float:
    """Mean over held-out datasets of E[best of k configs drawn without replacement].

    Exact (``n_random=None``): with a column's values sorted ascending, the i-th smallest is the
    maximum of a k-subset with probability C(i−1, k−1) / C(N, k). Expectation is linear, so the
    mean over held-out datasets of the same draw is the mean of per-dataset expectations.
    Otherwise ``n_random`` Monte-Carlo draws from ``rng``.
    """
    n = held.shape[0]
    k = min(k, n)
    if n_random is None:
        total = math.comb(n, k)
        weights = np.array([math.comb(i - 1, k - 1) / total for i in range(1, n + 1)])
        return float(np.mean([weights @ np.sort(held[:, j]) for j in range(held.shape[1])]))
    draws = np.argsort(rng.random((n_random, n)), axis=1)[:, :k]
    return float(held[draws].max(axis=1).mean())


def _heldout_units(part: pd.DataFrame, datasets: Sequence[str], group: str) -> dict[str, list[str]]:
    if group == "dataset":
        return {d: [d] for d in datasets}
    types = part.dropna(subset=["task_type"]).groupby("dataset")["task_type"].first() if "task_type" in part else {}
    units: dict[str, list[str]] = {}
    for d in datasets:  # a dataset without a task type is its own unit
        units.setdefault(str(types[d]) if d in types else d, []).append(d)
    return units


def leave_one_out(df: pd.DataFrame, tau: float = 0.95, ks: Sequence[int] = (1, 3, 5), group: str = "dataset",
                  seed: int = 0, n_random: int | None = None,
                  preset_configs: Mapping[GroupKey, str | None] | str | None = None, mode: str = "ratio",
                  group_by: Sequence[str] | str | None = GROUP_BY) -> pd.DataFrame:
    """Leave-one-dataset-out (or task-type-out) validation of CBS's top-k, with baselines.

    For each held-out unit, configs are ranked on the remaining datasets only, and each method is
    scored by the best relative score among its top-k on the held-out dataset(s) (mean over them
    for a task type; missing = 0). That is the question a user has: "if I train only these k on a
    new dataset, how close do I get to what the whole grid would have found?"

    Methods: ``cbs``; ``best_on_average`` (top-k by mean relative score on the training datasets);
    ``multiple_defaults`` (:func:`multiple_defaults` fitted on the training datasets); ``random``
    (expected best of k configs drawn without replacement: exact when ``n_random`` is None, else
    that many Monte-Carlo draws seeded by ``seed``); ``preset`` (only when ``preset_configs`` is
    given: that group's shipped config, the same for every k; NaN when absent from the grid).

    Args:
        df: the results table (all groups).
        tau: coverage threshold for CBS.
        ks: the k values to report.
        group: ``dataset`` or ``task_type`` (needs a ``task_type`` column).
        preset_configs: config_id per group key (e.g. ``{("llama", "lora"): "batch_size=8,..."}``),
            or one config_id for every group.
        mode: relative score mode (see :func:`relative_scores`).
        group_by: columns ranked separately.

    Returns:
        Tidy DataFrame: the group columns, ``heldout``, ``method_name``, ``k``, ``best_relative``.
        Groups with fewer than two held-out units are skipped with a warning.
    """
    if group not in ("dataset", "task_type"):
        raise ValueError(f"group must be 'dataset' or 'task_type', got {group!r}")
    if group == "task_type" and "task_type" not in df.columns:
        raise ValueError("group='task_type' needs a `task_type` column in the results table")
    if not ks or any(int(k) < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {list(ks)}")
    table = validate_results(df)
    names = _group_names(group_by)
    group_cols = [c for c in names if c in table.columns]
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for key, part in split_groups(table, group_by).items():
        rel = relative_scores(part, mode)
        units = _heldout_units(part, list(rel.columns), group)
        if len(units) < 2:
            log.warning("group %s has %d %s(s); nothing to hold out", key, len(units), group)
            continue
        preset = preset_configs.get(key) if isinstance(preset_configs, Mapping) else preset_configs
        filled, kmax = rel.fillna(0.0), max(ks)
        labels = {n: v for n, v in zip(names, key) if n in group_cols}
        for name, held in units.items():
            train = rel.drop(columns=held)
            orders = {"cbs": list(cbs_rank(train, tau, top=kmax)["config_id"]),
                      "best_on_average": best_on_average_order(train, kmax),
                      "multiple_defaults": multiple_defaults(train, kmax)}
            target = filled[held]
            for k in ks:
                scores = {method: float(target.loc[order[:k]].max(axis=0).mean()) for method, order in orders.items()}
                scores["random"] = _expected_best_of_k(target.to_numpy(), int(k), n_random, rng)
                if preset_configs is not None:
                    scores["preset"] = float(target.loc[preset].mean()) if preset in target.index else float("nan")
                rows += [{**labels, "heldout": name, "method_name": method, "k": int(k), "best_relative": value}
                         for method, value in scores.items()]
    return pd.DataFrame(rows, columns=[*group_cols, "heldout", "method_name", "k", "best_relative"])


def loo_summary(detail: pd.DataFrame) -> pd.DataFrame:
    """Mean over held-out units of :func:`leave_one_out`'s scores, per group, method and k
    (``n_heldout`` = how many units each mean is over; NaN presets are skipped)."""
    keys = [c for c in detail.columns if c not in ("heldout", "best_relative")]
    return (detail.groupby(keys, sort=False, dropna=False)["best_relative"]
            .agg(mean_best_relative="mean", n_heldout="count").reset_index())


def rank_results(df: pd.DataFrame, tau: float = 0.95, mode: str = "ratio",
                 group_by: Sequence[str] | str | None = GROUP_BY, include: str = "last",
                 top: int | None = None) -> dict[GroupKey, pd.DataFrame]:
    """Results table → one CBS ranking per group (``{(model, method): ranking}``, keys as in
    :func:`split_groups`). ``group_by=None`` pools every row into one group ``()``: a config's
    score on a dataset is then its mean over models and methods.

    ``include='completed'`` treats scores of rows whose ``status`` is not ``completed`` as missing
    (a no-op for tables without a ``status`` column); ``'last'`` keeps every score.
    """
    if include not in ("last", "completed"):
        raise ValueError(f"include must be 'last' or 'completed', got {include!r}")
    table = validate_results(df)
    if include == "completed" and "status" in table.columns:
        table = table.assign(score=table["score"].where(table["status"] == "completed"))
    return {key: cbs_rank(relative_scores(part, mode), tau, top) for key, part in split_groups(table, group_by).items()}


def ranking_to_json(ranking: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """``{"ranking": [{"config_id", "newly_covered", "cumulative_coverage", "mean_best_relative"}, ...]}``
    for one group, best first, in plain Python types (what ``tunescout rank --json`` prints)."""
    return {"ranking": [{"config_id": str(r.config_id), "newly_covered": [str(d) for d in r.newly_covered],
                         "cumulative_coverage": float(r.cumulative_coverage),
                         "mean_best_relative": float(r.mean_best_relative)} for r in ranking.itertuples()]}


def rankings_to_json(rankings: Mapping[GroupKey, pd.DataFrame],
                     group_by: Sequence[str] | str | None = GROUP_BY) -> dict[str, list[dict[str, Any]]]:
    """Several groups: ``{"groups": [{"model": .., "method": .., "ranking": [..]}, ...]}``, each
    group labelled by the ``group_by`` names zipped with its key."""
    names = _group_names(group_by)
    return {"groups": [{**{n: (None if v is None or pd.isna(v) else str(v)) for n, v in zip(names, key)},
                        **ranking_to_json(ranking)} for key, ranking in rankings.items()]}


def _label(key: GroupKey, names: Sequence[str]) -> str:
    return " ".join(f"{n}={v}" for n, v in zip(names, key) if v is not None and not pd.isna(v)) or "all results"


def format_rankings(rankings: Mapping[GroupKey, pd.DataFrame] | pd.DataFrame,
                    group_by: Sequence[str] | str | None = GROUP_BY, top: int | None = None) -> str:
    """Plain-text tables, one per group: rank, coverage, mean best relative, config, newly covered."""
    if isinstance(rankings, pd.DataFrame):
        rankings = {(): rankings}
    blocks = []
    for key, ranking in rankings.items():
        shown = ranking if top is None else ranking.head(top)
        count = f"{len(ranking)} configs" if top is None else f"top {len(shown)}"
        lines = [f"# {_label(key, _group_names(group_by))} ({count})",
                 f"{'rank':>4}  {'cover':>5}  {'best':>5}  config / newly covered"]
        for r in shown.itertuples():
            new = f"  [+{', '.join(r.newly_covered)}]" if r.newly_covered else ""
            lines.append(f"{r.rank:>4}  {r.cumulative_coverage:>5.2f}  {r.mean_best_relative:>5.3f}  "
                         f"{r.config_id}{new}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def format_loo_summary(summary: pd.DataFrame) -> str:
    """Plain-text table of :func:`loo_summary`: one row per group × method, one column per k."""
    if summary.empty:  # every group skipped (one dataset each, as in every `tune` store): say so, not "Empty DataFrame"
        return "held-out validation: no model × method group has two datasets (or task types) to hold one out"
    keys = [c for c in summary.columns if c not in ("k", "mean_best_relative", "n_heldout")]
    wide = summary.pivot_table(index=keys, columns="k", values="mean_best_relative", dropna=False, sort=False)
    wide.columns = [f"top-{k}" for k in wide.columns]
    return wide.reset_index().to_string(index=False, float_format=lambda x: f"{x:.3f}", na_rep="n/a")
