"""The results table: the one shape every ranking and validation in ``analysis`` reads.

One row is one hyperparameter configuration evaluated on one dataset:

=================== ========================================================================
column              meaning
=================== ========================================================================
``config_id``       readable, stable name of the configuration (required)
``dataset``         dataset name (required)
``score``           the configuration's final task score there; NaN = missing (required)
``model``           base model (optional; rankings are made per model and method)
``method``          ``full`` / ``lora`` (optional)
``task_type``       dataset family, for leave-one-task-type-out validation (optional)
``metric``          metric name, used for the direction when ``higher_is_better`` is absent
``higher_is_better`` direction of ``score`` on that dataset (optional; default true)
``hp.<name>``       the configuration's hyperparameters (optional, informational)
=================== ========================================================================

The table comes from a CSV/Parquet file (:func:`load_results`: results of a grid run
elsewhere, or the published study's) or from a tunescout study store
(:func:`results_from_store`), so ranking code never has to know where scores came from.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tunescout.settings import nest_dotted
from tunescout.evaluate.metrics import get_metric
from tunescout.study.keys import dataset_metric
from tunescout.study.store import FINISHED, StudyStore, open_store

__all__ = ["REQUIRED_COLUMNS", "TABLE_SUFFIXES", "config_id_of", "load_results", "nested_hparams",
           "results_from_store", "validate_results"]

log = logging.getLogger("tunescout.analysis")

REQUIRED_COLUMNS = ("config_id", "dataset", "score")
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
"""File names read as a results table; anything else is taken for a study store."""
OPTIONAL_COLUMNS = ("model", "method", "task_type", "metric", "higher_is_better")
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def _direction(metric: str) -> bool:
    """A metric's direction from the registry; unknown names are assumed higher-is-better, loudly,
    because a ranking with one dataset's direction guessed is more useful than no ranking."""
    try:
        return get_metric(metric).higher_is_better
    except ValueError as exc:
        log.warning("%s; assuming higher is better", exc)
        return True


def _as_bool(value: Any, row: int, source: str) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(f"{source}: row {row}: higher_is_better must be true/false, got {value!r}")


def validate_results(df: pd.DataFrame, source: str = "results") -> pd.DataFrame:
    """Check a results table and return a normalised copy (types fixed, ``higher_is_better`` filled).

    Why a separate step: a CSV from elsewhere is the usual input, and a wrong column name or a
    text score must fail here with the name of the problem, not as a KeyError deep in a ranking.

    Args:
        df: a table with at least ``config_id``, ``dataset``, ``score``.
        source: name used in error messages (a file path).

    Returns:
        A copy with ``config_id``/``dataset`` as strings, ``score`` as float (NaN = missing) and a
        boolean ``higher_is_better`` column (from ``metric`` through the registry when absent).

    Raises:
        ValueError: missing columns (naming the closest existing ones), an empty table, a score
            that is not a number, or a dataset whose rows disagree on the direction.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        found = [str(c) for c in df.columns]
        hints = []
        for col in missing:
            close = difflib.get_close_matches(col, found, n=1, cutoff=0.5)
            hints.append(f"`{col}`" + (f" (closest: `{close[0]}`)" if close else ""))
        raise ValueError(f"{source}: missing column(s) {', '.join(hints)}; found: {', '.join(found) or 'none'}")
    if df.empty:
        raise ValueError(f"{source}: the results table has no rows")
    out = df.copy()
    for col in ("config_id", "dataset"):
        if out[col].isna().any():
            row = int(np.flatnonzero(out[col].isna().to_numpy())[0])
            raise ValueError(f"{source}: row {row}: `{col}` is empty")
        out[col] = out[col].astype(str)
    scores = pd.to_numeric(out["score"], errors="coerce")
    bad = scores.isna() & out["score"].notna() & (out["score"].astype(str).str.strip() != "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"{source}: row {row}: score {out['score'].iloc[row]!r} is not a number")
    out["score"] = scores.astype(float)
    if "higher_is_better" in out.columns:
        out["higher_is_better"] = [_as_bool(v, i, source) for i, v in enumerate(out["higher_is_better"])]
    elif "metric" in out.columns:
        out["higher_is_better"] = [_direction(str(m)) for m in out["metric"]]
    else:
        out["higher_is_better"] = True
    mixed = out.groupby("dataset")["higher_is_better"].nunique()
    if (mixed > 1).any():
        raise ValueError(f"{source}: dataset(s) {', '.join(mixed[mixed > 1].index)} mix higher- and "
                         "lower-is-better rows; one dataset must have one metric")
    return out


def load_results(path: str | Path) -> pd.DataFrame:
    """Read a results table from CSV (``.csv``, ``.tsv``) or Parquet (``.parquet``, ``.pq``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unknown extension, or the table breaks the contract (see :func:`validate_results`).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"results file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        df = pd.read_csv(path)
    elif suffix == ".tsv":
        df = pd.read_csv(path, sep="\t")
    elif suffix in (".parquet", ".pq"):
        df = pd.read_parquet(path)
    else:
        raise ValueError(f"{path}: unknown results format {suffix!r} (use .csv, .tsv, .parquet)")
    return validate_results(df, str(path))


def _format_value(value: Any) -> str:
    # repr of a float is exact and short (1e-4 -> 0.0001, 2e-5 -> 2e-05), so ids never collide
    # the way a rounded format could; whole floats from YAML (8.0) read as ints.
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def config_id_of(hparams: dict[str, Any]) -> str:
    """``batch_size=8,learning_rate=0.0001``: the hyperparameters sorted by key.

    Readable on a terminal and stable across runs and stores, unlike trial ids, which also hash
    the model, dataset and seed (the same configuration has one trial id per dataset).
    """
    if not hparams:
        return "default"
    return ",".join(f"{k}={_format_value(hparams[k])}" for k in sorted(hparams))


def version_tag(trial: dict[str, Any]) -> str:
    """``@v<N>`` for a trial of an earlier spec version, "" for a current one."""
    return f"@v{trial['spec_version']}" if trial.get("superseded") else ""


def _final_scores(store: StudyStore, study: str | None, all_versions: bool) -> dict[tuple[str, str], tuple[float, int]]:
    """(trial_id, metric) -> (value at the largest sample count, that sample count)."""
    final: dict[tuple[str, str], tuple[float, int]] = {}
    for r in store.results(study=study, all_versions=all_versions):
        key, value = (r["trial_id"], r["name"]), r["value"]
        if key not in final or r["samples"] >= final[key][1]:
            final[key] = (float("nan") if value is None else float(value), r["samples"])
    return final


def results_from_store(store_path: str | Path | StudyStore, include: str = "last", average_seeds: bool = True,
                       study: str | None = None, all_versions: bool = False) -> pd.DataFrame:
    """The results table of a study store: one row per model × method × dataset × configuration.

    ``score`` is a trial's final value of its dataset's metric (the metric named for that dataset
    in the study spec kept in the store). Seeds are averaged into one score (``n_seeds`` says
    over how many scored seeds) because a ranking compares configurations, not random draws.

    Args:
        store_path: path of the SQLite store (opened read-only), or an open store.
        include: ``last``: trials that ended ``stopped``/``diverged``/``failed`` count with their
            last evaluated score (a stopped run's score is what stopping it bought); ``completed``:
            only completed trials have a score, the rest are missing (NaN). A trial with no score
            is missing either way. Pending and running trials are left out.
        average_seeds: false keeps one row per trial (with ``seed`` and ``trial_id``).
        study: the study to read (None: the store's only one).
        all_versions: also trials superseded by a later version of the study's spec. Their
            configurations are told apart from the current ones (``config_id`` ends ``@v<N>``,
            their spec version): the same grid point under other fixed settings is another config.

    Returns:
        The results table (see module doc) plus ``metric``, ``n_seeds``, ``status`` (statuses of
        the seeds, ``/``-joined when they differ), ``samples`` and ``tokens`` (mean per trial),
        ``trial_ids`` and the ``hp.*`` columns.

    Raises:
        StoreError: no store at that path, not a store, or a store of several studies and no ``study``.
        ValueError: unknown ``include``, or a store with no study.
    """
    if include not in ("last", "completed"):
        raise ValueError(f"include must be 'last' or 'completed', got {include!r}")
    own = isinstance(store_path, (str, Path))
    store = open_store(store_path, readonly=True) if own else store_path
    try:
        spec = store.study_spec(study)
        if spec is None:
            raise ValueError(f"{store.path}: the store holds no study")
        tasks = {d["name"]: d for d in spec.get("datasets", [])}
        final = _final_scores(store, study, all_versions)
        rows, skipped = [], set()
        for t in store.trials(study, status=FINISHED, all_versions=all_versions):
            task = tasks.get(t["dataset"])
            if task is None:
                skipped.add(t["dataset"])
                continue
            metric = dataset_metric(task)
            score = final.get((t["trial_id"], metric), (float("nan"), 0))[0]
            if include == "completed" and t["status"] != "completed":
                score = float("nan")
            rows.append({
                "model": t["model"], "method": t["method"], "dataset": t["dataset"],
                "task_type": task.get("task_type"), "config_id": config_id_of(t["hparams"]) + version_tag(t),
                "score": score if math.isfinite(score) else float("nan"), "metric": metric,
                "higher_is_better": _direction(metric), "seed": t["seed"], "trial_id": t["trial_id"],
                "status": t["status"], "samples": t["samples"], "tokens": t["tokens"],
                **{f"hp.{k}": v for k, v in t["hparams"].items()},
            })
    finally:
        if own:
            store.close()
    if skipped:
        log.warning("trials on dataset(s) %s are not in the study spec (no metric known); left out",
                    ", ".join(sorted(skipped)))
    trials = pd.DataFrame(rows)
    if trials.empty or not average_seeds:
        return trials
    return _average_seeds(trials)


def _average_seeds(trials: pd.DataFrame) -> pd.DataFrame:
    keys = ["model", "method", "dataset", "config_id"]
    hp_cols = [c for c in trials.columns if c.startswith("hp.")]
    out = trials.groupby(keys, sort=False, dropna=False).agg(
        task_type=("task_type", "first"), score=("score", "mean"), metric=("metric", "first"),
        higher_is_better=("higher_is_better", "first"), n_seeds=("score", "count"),
        status=("status", lambda s: "/".join(sorted(set(s)))), samples=("samples", "mean"),
        tokens=("tokens", "mean"), trial_ids=("trial_id", ",".join),
        **{c: (c, "first") for c in hp_cols},
    ).reset_index()
    return out[["model", "method", "dataset", "task_type", "config_id", "score", "metric", "higher_is_better",
                "n_seeds", "status", "samples", "tokens", "trial_ids", *hp_cols]]


def nested_hparams(record: dict[str, Any]) -> dict[str, Any]:
    """A table row's ``hp.*`` values as a train config: ``{"hp.lora.r": 16.0, "hp.learning_rate":
    1e-4}`` → ``{"learning_rate": 1e-4, "lora": {"r": 16}}`` (other columns are ignored).

    Table columns that mix configs with and without a key (LoRA-only keys) are float columns
    with NaN; integral values are given back as ints, missing ones dropped.
    """
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if not str(key).startswith("hp."):
            continue
        value = value.item() if hasattr(value, "item") else value
        if isinstance(value, float) and math.isnan(value):
            continue
        if isinstance(value, float) and value.is_integer() and value >= 1:
            value = int(value)
        flat[str(key).removeprefix("hp.")] = value
    return nest_dotted(flat)
