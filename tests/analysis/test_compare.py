"""The recipe's comparisons on synthetic tables: the batch size × learning rate grid (per cohort and
relative across datasets) and stacked vs phased with samples-to-peak."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tunescout.analysis.compare import batch_lr_table, stacked_vs_phased

SPEC = {"datasets": [{"name": "sent", "metric": "accuracy"}, {"name": "lossy", "metric": "val_loss"}],
        "fixed": {"epochs": 1}}
BATCHES, LRS = [8, 16], [1e-4, 1e-3, 3e-3]


def grid_tables(score, *, seeds=(0,), status=lambda *_: "completed") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trials on batch × LR for both datasets with score(dataset, batch, lr, seed) as final value."""
    trials, results = [], []
    for dataset in ("sent", "lossy"):
        metric = "accuracy" if dataset == "sent" else "val_loss"
        for b in BATCHES:
            for lr in LRS:
                for seed in seeds:
                    tid = f"{dataset}-{b}-{lr}-{seed}"
                    trials.append({"trial_id": tid, "model": "m", "method": "full", "dataset": dataset,
                                   "status": status(dataset, b, lr), "seed": seed, "samples": 100,
                                   "hp.batch_size": b, "hp.learning_rate": lr})
                    results.append({"trial_id": tid, "name": metric, "value": 0.0, "samples": 50})
                    results.append({"trial_id": tid, "name": metric, "value": score(dataset, b, lr, seed),
                                    "samples": 100})
    return pd.DataFrame(trials), pd.DataFrame(results)


def _score(dataset: str, b: int, lr: float, seed: int) -> float:
    # accuracy best at (16, 1e-4) = 0.9; loss best (lowest) at (16, 1e-4) = 1.0
    rank = BATCHES.index(b) * 3 + (2 - LRS.index(lr))  # 0 .. 5, 5 = (16, 1e-4)
    return 0.4 + 0.1 * rank if dataset == "sent" else 2.0 - 0.2 * rank


def test_batch_lr_pivot_has_batch_rows_and_lr_columns() -> None:
    trials, results = grid_tables(_score)
    tables = batch_lr_table(trials, results, SPEC)
    assert set(tables.scores) == {("m", "full", "sent"), ("m", "full", "lossy")}
    sent = tables.scores[("m", "full", "sent")]
    assert sent.shape == (2, 3) and list(sent.index) == BATCHES and list(sent.columns) == LRS
    assert sent.loc[16, 1e-4] == pytest.approx(0.9) and sent.loc[8, 3e-3] == pytest.approx(0.4)
    assert tables.scores[("m", "full", "lossy")].loc[16, 1e-4] == pytest.approx(1.0)
    rel = tables.relative[("m", "full")]
    assert rel.shape == (2, 3) and rel.loc[16, 1e-4] == pytest.approx(1.0)
    # (8, 3e-3): accuracy 0.4 / 0.9, loss 1.0 / 2.0, averaged
    assert rel.loc[8, 3e-3] == pytest.approx((0.4 / 0.9 + 1.0 / 2.0) / 2)


def test_batch_lr_cells_average_seeds_and_skip_stopped_trials() -> None:
    trials, results = grid_tables(lambda d, b, lr, seed: 0.5 + 0.2 * seed, seeds=(0, 1),
                                  status=lambda d, b, lr: "stopped" if (b, lr) == (8, 1e-3) else "completed")
    tables = batch_lr_table(trials, results, SPEC)
    sent = tables.scores[("m", "full", "sent")]
    assert sent.loc[16, 1e-4] == pytest.approx(0.6)
    assert math.isnan(sent.loc[8, 1e-3])
    cell = tables.long.query("dataset == 'sent' and batch_size == 16 and learning_rate == 1e-4").iloc[0]
    assert cell["n_trials"] == 2
    best = batch_lr_table(trials, results, SPEC, agg="max", statuses=("completed", "stopped"))
    assert best.scores[("m", "full", "sent")].loc[8, 1e-3] == pytest.approx(0.7)


def test_batch_lr_axis_from_fixed_or_an_error() -> None:
    trials, results = grid_tables(_score)
    one = trials[trials["hp.batch_size"] == 8].drop(columns="hp.batch_size")
    tables = batch_lr_table(one, results, {**SPEC, "fixed": {"batch_size": 8}})
    assert tables.scores[("m", "full", "sent")].shape == (1, 3)
    with pytest.raises(ValueError, match="batch_size"):
        batch_lr_table(one, results, SPEC)


# --- stacked vs phased -----------------------------------------------------------------------


def strategy_tables(curves: dict[tuple[str, str], list[float]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One trial per (dataset, strategy), its metric recorded at samples 10, 20, 30, ..."""
    trials, results = [], []
    for (dataset, strategy), values in curves.items():
        tid = f"{dataset}-{strategy}"
        metric = "accuracy" if dataset == "sent" else "val_loss"
        trials.append({"trial_id": tid, "model": "m", "method": "full", "dataset": dataset, "status": "completed",
                       "seed": 0, "samples": 10 * len(values), "hp.strategy": strategy, "hp.learning_rate": 1e-4})
        results += [{"trial_id": tid, "name": metric, "value": v, "samples": 10 * (i + 1)}
                    for i, v in enumerate(values)]
        results.append({"trial_id": tid, "name": "f1", "value": 5.0, "samples": 10})  # another metric: ignored
    return pd.DataFrame(trials), pd.DataFrame(results)


def test_samples_to_peak_is_the_first_time_the_best_value_was_seen() -> None:
    trials, results = strategy_tables({
        ("sent", "stacked"): [0.5, 0.8, 0.8, 0.7],   # peak 0.8 first at 20, final 0.7
        ("sent", "phased"): [0.3, 0.6, 0.7, 0.85],   # peak at the end
        ("lossy", "stacked"): [2.0, 1.1, 1.5],       # loss: the minimum is the peak
        ("lossy", "phased"): [2.0, 1.8, 1.2],
    })
    out = stacked_vs_phased(trials, results, SPEC).set_index("dataset")
    assert out.attrs["reason"] == ""
    sent = out.loc["sent"]
    assert (sent["score_stacked"], sent["peak_stacked"], sent["samples_to_peak_stacked"]) == (0.7, 0.8, 20)
    assert (sent["score_phased"], sent["peak_phased"], sent["samples_to_peak_phased"]) == (0.85, 0.85, 40)
    assert sent["config"] == "learning_rate=0.0001" and sent["samples_stacked"] == 40
    lossy = out.loc["lossy"]
    assert (lossy["peak_stacked"], lossy["samples_to_peak_stacked"]) == (1.1, 20)
    assert (lossy["peak_phased"], lossy["samples_to_peak_phased"]) == (1.2, 30)


def test_pairs_keep_a_row_when_one_side_is_missing() -> None:
    trials, results = strategy_tables({("sent", "stacked"): [0.5, 0.6], ("sent", "phased"): [0.4, 0.7],
                                       ("lossy", "stacked"): [1.0, 0.9]})
    out = stacked_vs_phased(trials, results, SPEC).set_index("dataset")
    assert len(out) == 2 and np.isnan(out.loc["lossy", "score_phased"])
    assert out.loc["lossy", "score_stacked"] == pytest.approx(0.9)


def test_no_strategy_axis_gives_an_empty_frame_with_a_reason() -> None:
    trials, results = strategy_tables({("sent", "stacked"): [0.5], ("sent", "phased"): [0.6]})
    out = stacked_vs_phased(trials.drop(columns="hp.strategy"), results, SPEC)
    assert out.empty and "no `strategy` axis" in out.attrs["reason"]
    assert "score_stacked" in out.columns
    only = stacked_vs_phased(trials[trials["hp.strategy"] == "stacked"], results, SPEC)
    assert only.empty and "both" in only.attrs["reason"]
