"""Export a study store as flat tables (CSV / Parquet) that load straight into pandas."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from tunescout.study.keys import dataset_metric
from tunescout.study.store import StudyStore, open_store

__all__ = ["export_store", "status_rows", "store_tables"]


def store_tables(store: StudyStore, study: str | None = None, all_versions: bool = False) -> dict[str, pd.DataFrame]:
    """``trials`` (one row per trial, hyperparameters as ``hp.*`` columns, ``superseded`` flag),
    ``telemetry``, ``results`` and promotion ``decisions`` of one study (the store's only one when ``study`` is None); trials
    of earlier spec versions only with ``all_versions``."""
    trials = pd.DataFrame(store.trials(study, all_versions=all_versions))
    if not trials.empty:
        hp = pd.json_normalize(trials["hparams"].tolist()).add_prefix("hp.")
        trials = pd.concat([trials.drop(columns=["hparams"]), hp], axis=1)
        trials["config"] = trials["config"].map(json.dumps)
    decisions = pd.DataFrame(store.decisions(study),
                             columns=["trial_id", "rung", "rank", "n", "kept", "reason", "decided_at"])
    return {"trials": trials, "telemetry": pd.DataFrame(store.telemetry(study=study, all_versions=all_versions)),
            "results": pd.DataFrame(store.results(study=study, all_versions=all_versions)), "decisions": decisions}


def status_rows(store: StudyStore, study: str | None = None, all_versions: bool = False) -> list[dict[str, Any]]:
    """One row per trial for ``tunescout status``: status, config, progress, the score so far
    (the latest value of its dataset's metric) and its promotion decisions, rung by rung."""
    scores: dict[str, dict[str, Any]] = {}
    for r in store.results(study=study, all_versions=all_versions):  # in sample order: the last one wins
        scores.setdefault(r["trial_id"], {})[r["name"]] = r["value"]
    spec = store.study_spec(study) or {}
    metric_of = {d["name"]: dataset_metric(d) for d in spec.get("datasets", [])}
    decided: dict[str, list[dict[str, Any]]] = {}
    for d in store.decisions(study):
        decided.setdefault(d["trial_id"], []).append({k: d[k] for k in ("rung", "rank", "n", "kept", "reason")})
    rows = []
    for t in store.trials(study, all_versions=all_versions):
        metric = metric_of.get(t["dataset"], dataset_metric({}))
        rows.append({"trial_id": t["trial_id"], "status": t["status"], "reason": t["reason"],
                     "superseded": t["superseded"], "attempts": t["attempts"],
                     "model": t["model"], "method": t["method"], "dataset": t["dataset"], "config": t["hparams"],
                     "started_at": t["started_at"], "finished_at": t["finished_at"], "samples": t["samples"],
                     "tokens": t["tokens"], "metric": metric,
                     "score": scores.get(t["trial_id"], {}).get(metric) if t["status"] != "pending" else None,
                     "decisions": decided.get(t["trial_id"], [])})
    return rows


def export_store(store_path: str | Path, out_dir: str | Path, formats: Sequence[str] = ("csv", "parquet"),
                 study: str | None = None, all_versions: bool = False) -> list[Path]:
    """Write every table in each format (``csv``, ``parquet``) into ``out_dir``.

    Returns:
        The files written.

    Raises:
        ValueError: an unknown format (before anything is written).
    """
    unknown = [f for f in formats if f not in ("csv", "parquet")]
    if unknown:
        raise ValueError(f"unknown export format(s) {unknown}; use csv and/or parquet")
    with open_store(store_path, readonly=True) as store:
        tables = store_tables(store, study, all_versions)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in tables.items():
        for fmt in formats:
            path = out / f"{name}.{fmt}"
            if fmt == "csv":
                frame.to_csv(path, index=False)
            else:
                frame.to_parquet(path, index=False)
            written.append(path)
    return written
