"""Coverage-based Search: relative scores, the greedy order, leave-one-out and its baselines."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from tunescout.analysis.cbs import (
    best_on_average_order, cbs_rank, format_loo_summary, format_rankings, leave_one_out, loo_summary,
    multiple_defaults, rank_results, ranking_to_json, rankings_to_json, relative_scores,
)

# Relative scores by construction (the grid's best on every dataset is 1.0). With tau = 0.95:
# A covers d1-d3 (at 0.96), D covers d3-d5 (at 1.0), C covers d1-d2 (at 1.0), B covers nothing
# but has the best mean (0.94). CBS: D (3 new, ties A on count and wins on the mean over them),
# then C (2 new, ties A and wins again), then B and A by own mean.
REL = {
    "A": [0.96, 0.96, 0.96, 0.50, 0.50],
    "B": [0.94, 0.94, 0.94, 0.94, 0.94],
    "C": [1.00, 1.00, 0.50, 0.60, 0.60],
    "D": [0.50, 0.50, 1.00, 1.00, 1.00],
}
DATASETS = ["d1", "d2", "d3", "d4", "d5"]
SCALE = [0.8, 50.0, 2.0, 0.5, 10.0]  # raw scores differ in scale per dataset; ratios undo it


def _table(rel: dict[str, list[float]], datasets: list[str] = DATASETS, scale: list[float] | None = None,
           **extra) -> pd.DataFrame:
    scale = scale or [1.0] * len(datasets)
    rows = [{"config_id": c, "dataset": d, "score": v * s, **extra}
            for c, values in rel.items() for d, v, s in zip(datasets, values, scale)]
    return pd.DataFrame(rows)


def test_relative_scores_ratio_undoes_dataset_scale() -> None:
    rel = relative_scores(_table(REL, scale=SCALE))
    assert list(rel.index) == ["A", "B", "C", "D"] and list(rel.columns) == DATASETS
    np.testing.assert_allclose(rel.to_numpy(), np.array(list(REL.values())), rtol=1e-12)


def test_cbs_prefers_coverage_over_best_on_average() -> None:
    rel = relative_scores(_table(REL, scale=SCALE))
    ranking = cbs_rank(rel, tau=0.95)
    assert best_on_average_order(rel)[0] == "B"
    assert list(ranking["config_id"]) == ["D", "C", "B", "A"]
    assert list(ranking["rank"]) == [1, 2, 3, 4]
    assert ranking["newly_covered"].tolist() == [["d3", "d4", "d5"], ["d1", "d2"], [], []]
    np.testing.assert_allclose(ranking["cumulative_coverage"], [0.6, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(ranking["mean_best_relative"], [0.8, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(ranking["mean_relative"], [0.8, 0.74, 0.94, 0.776])
    assert cbs_rank(rel, tau=0.95, top=2)["config_id"].tolist() == ["D", "C"]


def test_ties_break_by_new_mean_then_own_mean_then_id() -> None:
    # all three cover exactly one dataset at 1.0; own means: Y 0.75 > X 0.6 > Z 0.5
    rel = relative_scores(_table({"X": [1.0, 0.2], "Y": [1.0, 0.5], "Z": [0.0, 1.0]}, ["d1", "d2"]))
    assert cbs_rank(rel)["config_id"].tolist() == ["Y", "Z", "X"]
    # identical configs: the smaller id wins, whatever the input order
    rel = relative_scores(_table({"b": [1.0, 0.5], "a": [1.0, 0.5], "c": [0.3, 1.0]}, ["d1", "d2"]))
    assert cbs_rank(rel)["config_id"].tolist() == ["a", "c", "b"]
    # once everything is covered, the largest gain in mean best relative beats a higher own mean:
    # after P, R adds 0.04 on d2 and d3, Q 0.04 on d1, S (own mean 0.95) nothing
    rel = relative_scores(_table({"P": [0.96, 0.96, 0.96], "Q": [1.0, 0.2, 0.2], "R": [0.2, 1.0, 1.0],
                                  "S": [0.95, 0.95, 0.95]}, ["d1", "d2", "d3"]))
    ranking = cbs_rank(rel, tau=0.95)
    assert ranking["config_id"].tolist() == ["P", "R", "Q", "S"]
    np.testing.assert_allclose(ranking["mean_best_relative"], [0.96, 2.96 / 3, 1.0, 1.0])


def test_lower_is_better_metric_from_registry_and_flag() -> None:
    losses = pd.DataFrame({"config_id": ["a", "b", "c"], "dataset": "x", "score": [2.5, 2.0, 4.0],
                           "metric": "val_loss"})
    rel = relative_scores(losses)
    assert rel["x"].to_dict() == pytest.approx({"a": 0.8, "b": 1.0, "c": 0.5})
    flagged = losses.drop(columns="metric").assign(higher_is_better=False)
    pd.testing.assert_frame_equal(relative_scores(flagged), rel)
    assert cbs_rank(rel, tau=0.95)["config_id"].tolist()[0] == "b"
    minmax = relative_scores(losses, mode="minmax")
    assert minmax["x"].to_dict() == pytest.approx({"a": 0.75, "b": 1.0, "c": 0.0})


def test_minmax_and_non_positive_guards() -> None:
    df = pd.DataFrame({"config_id": ["a", "b", "c", "a", "b", "c"], "dataset": list("xxxyyy"),
                       "score": [0.2, 0.5, 0.8, 0.3, 0.3, 0.3]})
    rel = relative_scores(df, mode="minmax")
    assert rel["x"].tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert rel["y"].tolist() == [1.0, 1.0, 1.0]  # all tie: all are the best
    # ratio: negative scores clip to 0; a non-positive best falls back to minmax
    df = pd.DataFrame({"config_id": ["a", "b", "a", "b", "a", "b"], "dataset": list("ppnnzz"),
                       "score": [1.0, -0.5, -3.0, -1.0, 0.0, 0.0]})
    rel = relative_scores(df)
    assert rel["p"].tolist() == [1.0, 0.0]
    assert rel["n"].tolist() == [0.0, 1.0]
    assert rel["z"].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="mode must be"):
        relative_scores(df, mode="rank")


def test_non_positive_best_warns_once_per_dataset(caplog) -> None:
    df = pd.DataFrame({"config_id": ["a", "b"], "dataset": ["warn-once-set"] * 2, "score": [-2.0, -1.0]})
    with caplog.at_level("WARNING", logger="tunescout.analysis"):
        for _ in range(3):  # held-out validation re-ranks the same table many times
            assert relative_scores(df)["warn-once-set"].tolist() == [0.0, 1.0]
    assert sum("warn-once-set" in r.getMessage() for r in caplog.records) == 1


def test_missing_cells_and_all_nan_config() -> None:
    df = _table({"aaa": [np.nan, np.nan, np.nan], "b": [1.0, np.nan, 0.5], "c": [0.5, 1.0, np.nan],
                 "d": [0.1, 0.2, 1.0]}, ["x", "y", "z"])
    df = pd.concat([df, pd.DataFrame([{"config_id": "b", "dataset": "empty", "score": np.nan}])])
    df.loc[(df.config_id == "d") & (df.dataset == "y"), "score"] = np.inf  # diverged: counts as missing
    rel = relative_scores(df)
    assert "empty" not in rel.columns and "aaa" in rel.index and rel.loc["aaa"].isna().all()
    assert np.isnan(rel.loc["d", "y"])
    ranking = cbs_rank(rel)
    assert ranking["config_id"].tolist()[-1] == "aaa"  # sorts first by id, ranks last
    assert ranking["cumulative_coverage"].iloc[-1] == 1.0
    assert np.isnan(ranking["mean_relative"].iloc[-1])


def test_tau_edges() -> None:
    df = pd.DataFrame({"config_id": ["best", "edge", "under"], "dataset": "x", "score": [1.1, 1.045, 1.0449]})
    rel = relative_scores(df)
    assert rel.loc["edge", "x"] < 0.95  # float division lands a hair under tau ...
    covers = cbs_rank(rel.drop(index="best"), tau=0.95)  # ... yet a config at tau covers
    assert covers.set_index("config_id").loc["edge", "newly_covered"] == ["x"]
    assert covers.set_index("config_id").loc["under", "newly_covered"] == []
    assert cbs_rank(rel.drop(index="best"), tau=1.0)["cumulative_coverage"].max() == 0.0
    assert cbs_rank(rel, tau=0.0)["cumulative_coverage"].tolist() == [1.0, 1.0, 1.0]
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="tau must be"):
            cbs_rank(rel, tau=bad)


def test_coverage_curves_monotone_and_complete() -> None:
    rng = np.random.default_rng(3)
    values = rng.uniform(0.3, 1.0, size=(12, 7))
    values[rng.random(values.shape) < 0.2] = np.nan
    rel = relative_scores(pd.DataFrame(
        [{"config_id": f"c{i:02d}", "dataset": f"d{j}", "score": values[i, j]}
         for i in range(12) for j in range(7)]))
    ranking = cbs_rank(rel, tau=0.97)
    assert len(ranking) == 12 and sorted(ranking["config_id"]) == sorted(rel.index)
    assert (np.diff(ranking["cumulative_coverage"]) >= 0).all()
    assert (np.diff(ranking["mean_best_relative"]) >= -1e-12).all()
    assert ranking["cumulative_coverage"].iloc[-1] == 1.0
    assert ranking["mean_best_relative"].iloc[-1] == pytest.approx(1.0)
    assert sum(len(c) for c in ranking["newly_covered"]) == 7


def test_multiple_defaults_differs_from_cbs() -> None:
    rel = relative_scores(_table({"P": [1.0, 1.0, 0.1, 0.1], "Q": [0.9, 0.9, 0.9, 0.9],
                                  "R": [0.1, 0.1, 1.0, 1.0]}, ["d1", "d2", "d3", "d4"]))
    assert cbs_rank(rel, tau=0.95)["config_id"].tolist() == ["P", "R", "Q"]
    assert multiple_defaults(rel) == ["Q", "P", "R"]  # summed regret 0.4 beats 1.8
    assert multiple_defaults(rel, top=1) == ["Q"]


def _loo_table() -> pd.DataFrame:
    task = {"d1": "qa", "d2": "qa", "d3": "cls", "d4": "cls", "d5": "cls"}
    df = _table(REL, scale=SCALE, model="m", method="lora")
    return df.assign(task_type=df["dataset"].map(task))


def _loo(detail: pd.DataFrame, heldout: str, method: str, k: int) -> float:
    row = detail[(detail.heldout == heldout) & (detail.method_name == method) & (detail.k == k)]
    assert len(row) == 1
    return float(row["best_relative"].iloc[0])


def test_leave_one_dataset_out_known_numbers() -> None:
    detail = leave_one_out(_loo_table(), tau=0.95, ks=(1, 3), preset_configs={("m", "lora"): "A"})
    assert list(detail.columns) == ["model", "method", "heldout", "method_name", "k", "best_relative"]
    assert set(detail["heldout"]) == set(DATASETS)
    # held out d1: ranked on d2-d5, CBS starts with D (0.5 on d1); best-on-average and multiple
    # defaults start with B (0.94); top-3 are D,C,B and B,D,C, both reaching C's 1.0
    assert _loo(detail, "d1", "cbs", 1) == pytest.approx(0.5)
    assert _loo(detail, "d1", "best_on_average", 1) == pytest.approx(0.94)
    assert _loo(detail, "d1", "multiple_defaults", 1) == pytest.approx(0.94)
    assert _loo(detail, "d1", "cbs", 3) == pytest.approx(1.0)
    assert _loo(detail, "d1", "multiple_defaults", 3) == pytest.approx(1.0)
    assert _loo(detail, "d1", "random", 1) == pytest.approx((0.96 + 0.94 + 1.0 + 0.5) / 4)
    assert _loo(detail, "d1", "random", 3) == pytest.approx(0.25 * 0.96 + 0.75 * 1.0)
    assert _loo(detail, "d1", "preset", 1) == _loo(detail, "d1", "preset", 3) == pytest.approx(0.96)
    summary = loo_summary(detail)
    row = summary[(summary.method_name == "cbs") & (summary.k == 1)]
    assert row["n_heldout"].iloc[0] == 5
    assert row["mean_best_relative"].iloc[0] == pytest.approx(detail[(detail.method_name == "cbs")
                                                                     & (detail.k == 1)]["best_relative"].mean())
    text = format_loo_summary(summary)
    assert "top-1" in text and "top-3" in text and "multiple_defaults" in text


def test_a_table_with_nothing_to_hold_out_says_so() -> None:
    one = _loo_table()
    one = one[one["dataset"] == one["dataset"].iloc[0]]
    assert format_loo_summary(loo_summary(leave_one_out(one, ks=(1,)))) == (
        "held-out validation: no model × method group has two datasets (or task types) to hold one out")


def test_leave_one_task_type_out_and_missing_preset() -> None:
    detail = leave_one_out(_loo_table(), ks=(1,), group="task_type", preset_configs={("m", "lora"): "nope"})
    assert set(detail["heldout"]) == {"qa", "cls"}
    # held out qa (d1, d2): trained on d3-d5, where D covers everything; D scores 0.5 on both
    assert _loo(detail, "qa", "cbs", 1) == pytest.approx(0.5)
    assert _loo(detail, "qa", "best_on_average", 1) == pytest.approx(0.5)
    assert _loo(detail, "qa", "random", 1) == pytest.approx((0.96 + 0.94 + 1.0 + 0.5) / 4)
    assert np.isnan(_loo(detail, "qa", "preset", 1))
    with pytest.raises(ValueError, match="task_type"):
        leave_one_out(_loo_table().drop(columns="task_type"), group="task_type")


def test_random_baseline_matches_enumeration() -> None:
    values = {"a": [0.3, 1.0], "b": [0.9, 0.2], "c": [np.nan, 0.7], "d": [1.0, 0.4], "e": [0.6, 0.9]}
    df = _table(values, ["x", "y"])
    detail = leave_one_out(df, ks=(1, 2, 3, 5, 9))
    held = relative_scores(df).fillna(0.0)["y"]
    for k in (1, 2, 3, 5):
        exact = np.mean([max(held[list(s)]) for s in itertools.combinations(held.index, k)])
        assert _loo(detail, "y", "random", k) == pytest.approx(exact, abs=1e-12)
    assert _loo(detail, "y", "random", 9) == pytest.approx(1.0)  # k past the grid: every config
    mc = leave_one_out(df, ks=(2,), n_random=20000, seed=1)
    assert _loo(mc, "y", "random", 2) == pytest.approx(_loo(detail, "y", "random", 2), abs=0.01)
    pd.testing.assert_frame_equal(mc, leave_one_out(df, ks=(2,), n_random=20000, seed=1))


def test_rank_results_groups_include_and_json() -> None:
    a = _table(REL, scale=SCALE, model="m1", method="lora", status="completed")
    b = _table({"A": [1.0] * 5, "D": [0.1] * 5}, model="m2", method="full", status="completed")
    b.loc[b.config_id == "A", "status"] = "stopped"
    rankings = rank_results(pd.concat([a, b]), tau=0.95)
    assert set(rankings) == {("m1", "lora"), ("m2", "full")}
    assert rankings[("m1", "lora")]["config_id"].tolist() == ["D", "C", "B", "A"]
    assert rankings[("m2", "full")]["config_id"].tolist() == ["A", "D"]
    completed = rank_results(pd.concat([a, b]), include="completed")
    assert completed[("m2", "full")]["config_id"].tolist() == ["D", "A"]  # A's scores are missing
    doc = ranking_to_json(rankings[("m1", "lora")])
    assert json.loads(json.dumps(doc)) == doc and list(doc) == ["ranking"]
    assert doc["ranking"][0] == {"config_id": "D", "newly_covered": ["d3", "d4", "d5"],
                                 "cumulative_coverage": pytest.approx(0.6), "mean_best_relative": pytest.approx(0.8)}
    assert all(set(r) == {"config_id", "newly_covered", "cumulative_coverage", "mean_best_relative"}
               for r in doc["ranking"])
    groups = rankings_to_json(rankings)["groups"]
    assert [(g["model"], g["method"]) for g in groups] == [("m1", "lora"), ("m2", "full")]
    pooled = rank_results(pd.concat([a, b]), group_by=None)
    assert list(pooled) == [()]
    text = format_rankings(rankings, top=2)
    assert "model=m1 method=lora" in text and "[+d3, d4, d5]" in text and "B" not in text.split("\n\n")[0]
    assert text.startswith("# model=m1 method=lora (top 2)")
    assert format_rankings(rankings).startswith("# model=m1 method=lora (4 configs)")


def test_group_keys_align_with_names_when_a_column_is_absent() -> None:
    df = _table({"A": [1.0, 0.5], "B": [0.5, 1.0]}, ["x", "y"], method="lora")
    rankings = rank_results(df)
    assert list(rankings) == [(None, "lora")]
    assert rankings_to_json(rankings)["groups"][0]["method"] == "lora"
    assert format_rankings(rankings).startswith("# method=lora")
