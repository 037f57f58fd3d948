"""Export a study store as flat tables (CSV / Parquet) that load straight into pandas."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from tunescout.study.store import Store

__all__ = ["export_store", "store_tables"]


def store_tables(store: Store) -> dict[str, pd.DataFrame]:
    """``trials`` (one row per trial, hyperparameters as ``hp.*`` columns), ``telemetry``, ``results``."""
    trials = pd.DataFrame(store.trials())
    if not trials.empty:
        hp = pd.json_normalize(trials["hparams"].tolist()).add_prefix("hp.")
        trials = pd.concat([trials.drop(columns=["hparams"]), hp], axis=1)
        trials["config"] = trials["config"].map(json.dumps)
    return {"trials": trials, "telemetry": pd.DataFrame(store.telemetry()), "results": pd.DataFrame(store.results())}


def export_store(store_path: str | Path, out_dir: str | Path,
                 formats: Sequence[str] = ("csv", "parquet")) -> list[Path]:
    """Write every table in each format (``csv``, ``parquet``) into ``out_dir``.

    Returns:
        The files written.

    Raises:
        ValueError: an unknown format (before anything is written).
    """
    unknown = [f for f in formats if f not in ("csv", "parquet")]
    if unknown:
        raise ValueError(f"unknown export format(s) {unknown}; use csv and/or parquet")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with Store(store_path) as store:
        tables = store_tables(store)
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
