"""``tunescout analyze``: what a study says about the two studies' claims, as tables.

The composition the CLI prints and the demo summarises: whether early dynamics predicted the
score, which signal directions this study suggests, what stopping rules would have saved and
lost, the batch × learning-rate table, how promotion decided, and stacked against phased.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

__all__ = ["Analysis", "analyze_study", "read_study_tables"]


@dataclass
class Analysis:
    """The tables of :func:`analyze_study`, in the order they are shown, and the suggested signals."""

    frames: dict[str, pd.DataFrame]
    suggested: dict[str, Any]


def read_study_tables(store_path: str | Path, study: str | None = None) -> tuple[dict[str, pd.DataFrame], dict]:
    """A study's tables (trials, telemetry, results, decisions) and its spec, read-only.

    Raises:
        StoreError: no store there, not a store, or several studies and no ``study``.
        ValueError: the store holds no study yet.
    """
    from tunescout.study.export import store_tables
    from tunescout.study.store import open_store

    with open_store(store_path, readonly=True) as store:
        tables, spec = store_tables(store, study), store.study_spec(study)
    if spec is None:
        raise ValueError(f"{store_path}: the store holds no study (run `tunescout sweep STUDY.yaml` first)")
    return tables, spec


def analyze_study(store_path: str | Path, *, study: str | None = None, window: float = 0.1,
                  rung: float | None = None, all_statuses: bool = False,
                  rules: Sequence[dict[str, Any]] | None = None, n_boot: int = 2000, seed: int = 0) -> Analysis:
    """Every analysis of one study (see the module docstring); ``rules`` default to
    :func:`tunescout.analysis.default_replay_rules`, ``all_statuses`` correlates stopped trials too
    (with their last score)."""
    from tunescout.analysis import (batch_lr_table, default_replay_rules, dynamics_correlations,
                                    promotion_agreement, replay_stopping, signal_directions, stacked_vs_phased,
                                    suggest_signals)

    tables, spec = read_study_tables(store_path, study)
    t, r, tel = tables["trials"], tables["results"], tables["telemetry"]
    correlations = dynamics_correlations(tel, t, r, spec, window=window, rung=rung, only_completed=not all_statuses,
                                         n_boot=n_boot, seed=seed)
    directions = signal_directions(correlations)
    frames = {
        "dynamics": correlations,
        "signals": directions,
        "stopping_replay": replay_stopping(tel, t, r, spec, default_replay_rules() if rules is None else rules).summary,
        "batch_lr": batch_lr_table(t, r, spec).long,
        "promotion": promotion_agreement(tables["decisions"], t, r, spec),
        "stacked_vs_phased": stacked_vs_phased(t, r, spec),
    }
    return Analysis(frames, suggest_signals(directions))
