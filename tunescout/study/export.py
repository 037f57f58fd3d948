"""Export a study store as flat tables (CSV / Parquet) that load straight into pandas."""

from __future__ import annotations

import json
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


def export_store(store_path: str | Path, out_dir: str | Path, formats: list[str] = ("csv", "parquet")) -> list[Path]:
    """Write every table in each format; returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = Store(store_path)
    try:
        written = []
        for name, frame in store_tables(store).items():
            for fmt in formats:
                path = out / f"{name}.{fmt}"
                frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path, index=False)
                written.append(path)
        return written
    finally:
        store.close()
