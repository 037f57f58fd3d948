"""Did promotion keep the right trials? The rung ranking against the final one.

In ``promote`` mode every trial's early signals are known (each trained to the first rung), and
the promoted ones ran on to the end, so how well the rung-1 ranking predicted the final ranking
*of the promoted trials* can be measured without any survivor guesswork below the cut.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from tunescout.analysis.dynamics import final_scores, spearman
from tunescout.study.keys import COHORT

__all__ = ["promotion_agreement"]

COLUMNS = [*COHORT, "rung", "n_ranked", "n_kept", "n_finished", "rho", "top_kept_is_best"]


def promotion_agreement(decisions: pd.DataFrame, trials: pd.DataFrame, results: pd.DataFrame,
                        spec: Any) -> pd.DataFrame:
    """Per cohort and rung: how the rung's ranking agreed with the final scores of the trials it kept.

    Args:
        decisions: the store's promotion decisions (``trial_id, rung, rank, n, kept``).
        trials, results: the study's tables.
        spec: the study spec (each dataset's metric).

    Returns:
        One row per cohort × rung: ``model, dataset, method, rung, n_ranked, n_kept,
        n_finished`` (kept trials that completed), ``rho`` (Spearman between the rung rank and
        the final score, oriented so +1 means the rung's order was the final order; NaN with
        fewer than three finished), ``top_kept_is_best`` (the rung's first is the best finished).
        Empty for a study without promotion.
    """
    if decisions.empty:
        return pd.DataFrame(columns=COLUMNS)
    scores = final_scores(trials, results, spec).set_index("trial_id")
    info = trials.set_index("trial_id")
    data = decisions.join(info[list(COHORT) + ["status"]], on="trial_id")
    rows = []
    for key, g in data.groupby([*COHORT, "rung"], sort=True):
        kept = g[g["kept"].astype(bool)]
        done = kept[kept["status"] == "completed"]
        oriented = []
        for tid in done["trial_id"]:
            if tid not in scores.index:
                oriented.append(math.nan)
                continue
            s = scores.at[tid, "score"]
            oriented.append(s if scores.at[tid, "higher_is_better"] else -s)
        rho = spearman(-done["rank"].to_numpy(float), np.array(oriented, dtype=float)) if len(done) >= 3 else math.nan
        best = done["trial_id"].iloc[int(np.nanargmax(oriented))] if oriented and np.isfinite(oriented).any() else None
        first = done.sort_values("rank")["trial_id"].iloc[0] if len(done) else None
        rows.append({**dict(zip([*COHORT, "rung"], key)), "n_ranked": len(g), "n_kept": len(kept), "n_finished": len(done), "rho": rho,
                     "top_kept_is_best": bool(best is not None and best == first)})
    return pd.DataFrame(rows, columns=COLUMNS)
