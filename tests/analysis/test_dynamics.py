"""Early-dynamics analysis on synthetic tables: Spearman and its bootstrap CI against hand values,
the early window, final scores, the orientation of the correlations, and stopping-rule replays
whose stops, token fractions and regrets are computed by hand."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import pytest

from tunescout.analysis.dynamics import (
    bootstrap_ci,
    dynamics_correlations,
    early_signals,
    final_scores,
    spearman,
)
from tunescout.analysis.replay import default_replay_rules, replay_stopping, rule_label
from tunescout.config import ConfigError
from tunescout.stopping.rules import AshaRule, build_rule, rung_samples

SPEC = {"datasets": [{"name": "sent", "metric": "accuracy"}, {"name": "lossy", "metric": "val_loss"}]}


def make_tables(
    specs: Sequence[Mapping],
    *,
    planned: int = 100,
    batch: int = 10,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Trials, telemetry and results from per-trial specs.

    Each spec: ``id``, ``score`` (final metric value), and optionally ``grad``/``loss`` (a level or
    a function of samples), ``dataset`` (default ``sent``), ``model``, ``method``, ``status``,
    ``tpt`` (tokens per sample), ``upto`` (samples reached), ``batch`` (samples per step),
    ``val_loss`` ({samples: value}).
    """
    trials, telemetry, results = [], [], []
    for s in specs:
        dataset = s.get("dataset", "sent")
        metric = dict((d["name"], d["metric"]) for d in SPEC["datasets"])[dataset]
        upto, tpt, size = s.get("upto", planned), s.get("tpt", 10), s.get("batch", batch)
        for step, samples in enumerate(range(size, upto + 1, size), start=1):
            level = lambda v: v(samples) if callable(v) else v  # noqa: E731
            telemetry.append({"trial_id": s["id"], "step": step, "samples": samples, "tokens": samples * tpt,
                              "loss": level(s.get("loss", 2.0)), "grad_norm": level(s.get("grad", 1.0)), "lr": 1e-4,
                              "val_loss": s.get("val_loss", {}).get(samples, np.nan)})
        for samples, value in s.get("val_loss", {}).items():
            results.append({"trial_id": s["id"], "name": "val_loss", "value": value, "samples": samples})
        if s.get("score") is not None:
            results.append({"trial_id": s["id"], "name": metric, "value": s["score"], "samples": upto})
        trials.append({"trial_id": s["id"], "model": s.get("model", "m"), "method": s.get("method", "full"),
                       "dataset": dataset, "status": s.get("status", "completed"), "planned_samples": planned,
                       "planned_tokens": planned * tpt, "samples": upto, "tokens": upto * tpt, "seed": 0})
    return pd.DataFrame(trials), pd.DataFrame(telemetry), pd.DataFrame(results)


# --- Spearman and its CI -------------------------------------------------------------------


def test_spearman_matches_hand_values_with_ties() -> None:
    # x ranks [1, 2.5, 2.5, 4], y ranks [1, 3, 2, 4]; centred: sum xy 4.5, sxx 4.5, syy 5.
    assert spearman([1, 2, 2, 3], [10, 30, 20, 40]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert spearman([1, 1, 2, 2], [1, 2, 1, 2]) == pytest.approx(0.0)
    assert spearman([1, 2, 3, 4], [9, 7, 5, 1]) == pytest.approx(-1.0)
    # monotone but not linear: Spearman is 1 where Pearson is not
    assert spearman([1, 2, 3, 4], [1, 10, 100, 1000]) == pytest.approx(1.0)


def test_spearman_drops_missing_pairs_and_is_nan_when_undefined() -> None:
    assert spearman([1, 2, np.nan, 3], [1, 2, -50, 3]) == pytest.approx(1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert math.isnan(spearman([1], [2]))
    with pytest.raises(ValueError, match="same length"):
        spearman([1, 2], [1, 2, 3])


def test_bootstrap_ci_contains_estimate_and_is_deterministic() -> None:
    rng = np.random.default_rng(1)
    x = np.arange(15, dtype=float)
    y = x + rng.normal(0, 4, size=15)
    rho = spearman(x, y)
    lo, hi = bootstrap_ci(x, y, n=500, seed=3)
    assert lo <= rho <= hi and lo < hi
    assert bootstrap_ci(x, y, n=500, seed=3) == (lo, hi)
    assert bootstrap_ci(x, y, n=500, seed=4) != (lo, hi)
    narrow = bootstrap_ci(x, y, n=500, seed=3, alpha=0.5)
    assert lo <= narrow[0] <= narrow[1] <= hi


def test_bootstrap_ci_needs_three_pairs() -> None:
    assert all(math.isnan(v) for v in bootstrap_ci([1, 2], [2, 1]))
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci([1, 2, 3], [1, 2, 3], alpha=1.5)


# --- early window and final scores -----------------------------------------------------------


def test_window_rounding_is_the_stopping_rules() -> None:
    for planned in (7, 100, 333, 1001):
        for fraction in (0.07, 0.1, 0.25, 0.3):
            assert [rung_samples(fraction, planned)] == AshaRule(rungs=[fraction]).eval_points(planned)


def test_early_signals_average_the_window() -> None:
    grad = lambda s: s / 10  # noqa: E731  records at 10, 20, ... have grad 1, 2, ...
    trials, telemetry, _ = make_tables([{"id": "a", "score": 1, "grad": grad, "loss": lambda s: 100 - s},
                                        {"id": "b", "score": 1, "upto": 20}], batch=10)
    first = early_signals(telemetry, trials, window=0.2).set_index("trial_id")
    assert first.loc["a", "grad_norm"] == pytest.approx(1.5)  # records at 10 and 20
    assert first.loc["a", "loss"] == pytest.approx(85.0)
    assert (first.loc["a", "window_start"], first.loc["a", "window_end"]) == (0.0, 20)
    later = early_signals(telemetry, trials, window=0.1, rung=0.4).set_index("trial_id")
    assert later.loc["a", "grad_norm"] == pytest.approx(4.0)  # only the record at 40: (30, 40]
    assert later.loc["a", "window_start"] == pytest.approx(30.0)
    assert first.loc["b", "reached"] and not later.loc["b", "reached"]
    assert math.isnan(later.loc["b", "grad_norm"]) and math.isnan(later.loc["b", "loss"])
    with pytest.raises(ValueError, match="window"):
        early_signals(telemetry, trials, window=0.3, rung=0.2)


def test_final_scores_take_the_last_value_and_the_direction() -> None:
    trials, _, results = make_tables([{"id": "a", "score": 0.7}, {"id": "b", "score": None},
                                      {"id": "c", "dataset": "lossy", "score": 1.3}])
    results = pd.concat([results, pd.DataFrame([{"trial_id": "a", "name": "accuracy", "value": 0.9, "samples": 50},
                                                {"trial_id": "a", "name": "f1", "value": 0.1, "samples": 200}])])
    out = final_scores(trials, results, SPEC).set_index("trial_id")
    assert out.loc["a", "score"] == pytest.approx(0.7) and out.loc["a", "score_samples"] == 100
    assert math.isnan(out.loc["b", "score"])
    assert out.loc["c", "metric"] == "val_loss" and out.loc["c", "higher_is_better"] == False  # noqa: E712
    assert out.loc["a", "higher_is_better"] == True  # noqa: E712
    with pytest.raises(ValueError, match="not in the study spec"):
        final_scores(trials, results, {"datasets": [{"name": "sent", "metric": "accuracy"}]})


# --- correlations --------------------------------------------------------------------------


def _cohort(prefix: str, grads: Sequence[float], losses: Sequence[float], scores: Sequence[float],
            **extra) -> list[dict]:
    return [{"id": f"{prefix}{i}", "grad": g, "loss": lv, "score": s, **extra}
            for i, (g, lv, s) in enumerate(zip(grads, losses, scores))]


def test_correlations_are_oriented_so_positive_means_the_claim_holds() -> None:
    # Lower grad norm and higher loss go with a higher accuracy: the recipe's claim, both +1.
    specs = _cohort("a", [1, 2, 3, 4, 5], [5, 4, 3, 2, 1], [0.9, 0.8, 0.7, 0.6, 0.5])
    out = dynamics_correlations(*_tel_order(make_tables(specs)), SPEC, n_boot=200)
    row = out[out["level"] == "cohort"].iloc[0]
    assert row["n"] == 5 and row["rho_lowgrad_better"] == pytest.approx(1.0)
    assert row["rho_highloss_better"] == pytest.approx(1.0)
    # The same numbers as a loss (lower is better): the claim fails, both -1.
    specs = _cohort("b", [1, 2, 3, 4, 5], [5, 4, 3, 2, 1], [0.9, 0.8, 0.7, 0.6, 0.5], dataset="lossy")
    row = dynamics_correlations(*_tel_order(make_tables(specs)), SPEC, n_boot=200).iloc[0]
    assert row["metric"] == "val_loss"
    assert row["rho_lowgrad_better"] == pytest.approx(-1.0) and row["rho_highloss_better"] == pytest.approx(-1.0)


def _tel_order(tables: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> tuple[pd.DataFrame, ...]:
    trials, telemetry, results = tables
    return telemetry, trials, results


def test_small_cohorts_are_nan_and_the_pooled_row_weights_cohorts_by_size() -> None:
    specs = (_cohort("a", [1, 2, 3], [1, 1, 1], [0.9, 0.8, 0.7], model="m1")             # rho_lowgrad +1, n 3
             + _cohort("b", [1, 2, 3, 4, 5], [1, 1, 1, 1, 1], [1, 2, 3, 4, 5], model="m2")  # -1, n 5
             + _cohort("c", [1, 2], [1, 2], [0.5, 0.6], model="m3"))                        # too small
    out = dynamics_correlations(*_tel_order(make_tables(specs)), SPEC, n_boot=300).set_index("model")
    assert out.loc["m3", "n"] == 2 and math.isnan(out.loc["m3", "rho_lowgrad_better"])
    assert math.isnan(out.loc["m3", "lowgrad_ci_lo"])
    assert math.isnan(out.loc["m1", "rho_highloss_better"])  # a constant loss ranks nothing
    pooled = out.loc["all"]
    assert pooled["level"] == "pooled" and pooled["n"] == 8 and pooled["cohorts"] == 2
    assert pooled["rho_lowgrad_better"] == pytest.approx((3 * 1 + 5 * -1) / 8)
    assert pooled["lowgrad_ci_lo"] <= pooled["rho_lowgrad_better"] <= pooled["lowgrad_ci_hi"]
    assert math.isnan(pooled["rho_highloss_better"])


def test_only_completed_leaves_stopped_trials_out() -> None:
    specs = _cohort("a", [1, 2, 3, 4], [1, 1, 1, 1], [0.9, 0.8, 0.7, 0.95])
    specs[3]["status"] = "stopped"
    tables = _tel_order(make_tables(specs))
    assert dynamics_correlations(*tables, SPEC, n_boot=50).iloc[0]["rho_lowgrad_better"] == pytest.approx(1.0)
    with_stopped = dynamics_correlations(*tables, SPEC, n_boot=50, only_completed=False).iloc[0]
    assert with_stopped["n"] == 4 and with_stopped["rho_lowgrad_better"] < 1


# --- replaying stopping rules ----------------------------------------------------------------

# Ids sort a < b < c < d, so round-robin arrival is a, b, c, d at every step. Dynamics, eta 2, at
# 10% (the first record): a alone (n=1) passes; b ranks 2 of 2 (keep 1) → stopped; c ranks 2 of 3
# (keep 2) → passes; d ranks 4 of 4 (keep 2) → stopped. Losses tie, so the gradient norm decides.
GRADS = {"a": 1.0, "b": 3.0, "c": 2.0, "d": 4.0}
TPT = {"a": 10, "b": 20, "c": 10, "d": 30}
DYN = {"rule": "dynamics", "rungs": [0.1], "eta": 2, "min_steps": 1}


def four(scores: Mapping[str, float], dataset: str = "sent", **extra: Callable | dict) -> list[dict]:
    return [{"id": t, "grad": GRADS[t], "tpt": TPT[t], "score": scores[t], "dataset": dataset,
             **{k: v[t] for k, v in extra.items()}} for t in "abcd"]


@pytest.mark.parametrize("order", ["step", "progress"])  # equal batches: both orders are a, b, c, d
def test_dynamics_replay_stops_the_expected_trials_and_counts_their_tokens(order: str) -> None:
    trials, telemetry, results = make_tables(four({"a": 0.95, "b": 0.9, "c": 0.8, "d": 0.5}))
    replay = replay_stopping(telemetry, trials, results, SPEC, [DYN], order=order)
    stops = replay.trials.set_index("trial_id")
    assert sorted(stops.index[stops["stopped"]]) == ["b", "d"]
    assert list(stops.loc[["b", "d"], "stop_samples"]) == [10, 10]
    # full: 100 samples × tokens per sample; stopped: 10 samples × tokens per sample
    used, full = 1000 + 200 + 1000 + 300, 1000 + 2000 + 1000 + 3000
    cohort = replay.cohorts.iloc[0]
    assert cohort["replayable"] and cohort["n_stopped"] == 2
    assert (cohort["tokens_used"], cohort["tokens_full"]) == (used, full)
    assert cohort["token_fraction"] == pytest.approx(used / full)
    assert cohort["regret"] == 0 and cohort["best_kept"]
    summary = replay.summary.iloc[0]
    assert summary["rule"] == rule_label(DYN) == 'dynamics eta=2 min_steps=1 rungs=[0.1]'
    assert summary["compute_saved"] == pytest.approx(1 - used / full) and summary["best_kept_rate"] == 1.0


@pytest.mark.parametrize(("dataset", "scores", "best", "kept"), [
    ("sent", {"a": 0.9, "b": 0.95, "c": 0.8, "d": 0.5}, 0.95, 0.9),   # accuracy: b was best
    ("lossy", {"a": 1.2, "b": 1.5, "c": 1.4, "d": 1.0}, 1.0, 1.2),    # loss: d (lowest) was best
])
def test_regret_when_the_best_trial_is_stopped(dataset: str, scores: dict, best: float, kept: float) -> None:
    trials, telemetry, results = make_tables(four(scores, dataset))
    cohort = replay_stopping(telemetry, trials, results, SPEC, [DYN]).cohorts.iloc[0]
    assert not cohort["best_kept"]
    assert cohort["best_score"] == pytest.approx(best) and cohort["best_kept_score"] == pytest.approx(kept)
    assert cohort["regret"] == pytest.approx(abs(best - kept)) and cohort["regret"] > 0
    assert cohort["regret_rel"] == pytest.approx(abs(best - kept) / best)


def test_asha_is_not_replayable_without_val_loss_at_its_rungs() -> None:
    trials, telemetry, results = make_tables(four({"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6}))
    replay = replay_stopping(telemetry, trials, results, SPEC, [{"rule": "asha", "rungs": [0.1], "eta": 2}, DYN])
    asha, dyn = replay.summary.iloc[0], replay.summary.iloc[1]
    assert not asha["replayable"] and "val_loss" in asha["reason"] and "eval_at_samples" in asha["reason"]
    assert math.isnan(asha["token_fraction"]) and not (replay.trials["rule"] == asha["rule"]).any()
    assert dyn["replayable"] and dyn["n_stopped"] == 2


def test_asha_replays_on_the_val_loss_recorded_at_its_rungs() -> None:
    # val_loss at 10 samples: a 1.0, b 0.5, c 2.0, d 3.0 → a passes alone, b is best of 2, c ranks
    # 3 of 3 and d 4 of 4 (keep 2) → c and d stopped. Nothing recorded at 25: that rung can't replay.
    val = {t: {10: v, 100: 0.1} for t, v in {"a": 1.0, "b": 0.5, "c": 2.0, "d": 3.0}.items()}
    trials, telemetry, results = make_tables(four({"a": 0.6, "b": 0.7, "c": 0.9, "d": 0.5}, val_loss=val))
    rules = [{"rule": "asha", "rungs": [0.1], "eta": 2}, {"rule": "asha", "rungs": [0.25], "eta": 2}]
    replay = replay_stopping(telemetry, trials, results, SPEC, rules)
    stops = replay.trials.set_index("trial_id")
    assert sorted(stops.index[stops["stopped"]]) == ["c", "d"]
    cohort = replay.cohorts.iloc[0]
    assert cohort["token_fraction"] == pytest.approx((1000 + 2000 + 100 + 300) / 7000)
    assert cohort["regret"] == pytest.approx(0.2) and not cohort["best_kept"]
    assert list(replay.summary["replayable"]) == [True, False]
    assert "at 25 samples" in replay.summary.iloc[1]["reason"]


def test_a_rule_replayed_on_some_cohorts_says_how_many_it_skipped() -> None:
    val = {t: {10: v, 100: 0.1} for t, v in {"a": 1.0, "b": 0.5, "c": 2.0, "d": 3.0}.items()}
    with_rung = four({"a": 0.6, "b": 0.7, "c": 0.9, "d": 0.5}, val_loss=val)
    without = [{**s, "id": "x" + s["id"], "model": "m2"} for s in four({"a": 0.6, "b": 0.7, "c": 0.9, "d": 0.5})]
    trials, telemetry, results = make_tables(with_rung + without)
    replay = replay_stopping(telemetry, trials, results, SPEC, [{"rule": "asha", "rungs": [0.1], "eta": 2}])
    summary = replay.summary.iloc[0]
    assert summary["replayable"] and summary["n_replayed"] == 1 and summary["n_cohorts"] == 2
    assert summary["reason"].startswith("1 of 2 cohorts skipped: ") and "at 10 samples" in summary["reason"]


def test_replay_uses_completed_trials_per_cohort_and_sums_over_cohorts() -> None:
    specs = four({"a": 0.95, "b": 0.9, "c": 0.8, "d": 0.5})
    other = [{**s, "id": "x" + s["id"], "model": "m2"} for s in specs]
    other[1]["status"] = "stopped"  # xb: left out, so xd is judged against xa and xc only
    trials, telemetry, results = make_tables(specs + other)
    replay = replay_stopping(telemetry, trials, results, SPEC, [DYN])
    cohorts = replay.cohorts.set_index("model")
    assert cohorts.loc["m2", "n_trials"] == 3 and cohorts.loc["m2", "n_excluded"] == 1
    # m2 arrival xa, xc, xd: xc ranks 2 of 2 (keep 1) → stopped; xd ranks 3 of 3 (keep 2) → stopped.
    stops = replay.trials.set_index("trial_id")
    assert sorted(stops.index[stops["stopped"] & (stops["model"] == "m2")]) == ["xc", "xd"]
    summary = replay.summary.iloc[0]
    used = cohorts["tokens_used"].sum()
    assert used == 2500 + (1000 + 100 + 300) and summary["tokens_used"] == used
    assert summary["token_fraction"] == pytest.approx(used / (7000 + 5000))
    assert summary["n_trials"] == 7 and summary["n_stopped"] == 4


def test_replay_is_deterministic_whatever_the_row_order() -> None:
    trials, telemetry, results = make_tables(four({"a": 0.95, "b": 0.9, "c": 0.8, "d": 0.5}))
    forward = replay_stopping(telemetry, trials, results, SPEC, [DYN])
    shuffled = replay_stopping(telemetry.sample(frac=1, random_state=0), trials.iloc[::-1], results, SPEC, [DYN])
    pd.testing.assert_frame_equal(forward.cohorts, shuffled.cohorts)


def test_replay_rejects_bad_rules_and_orders() -> None:
    trials, telemetry, results = make_tables(four({"a": 0.95, "b": 0.9, "c": 0.8, "d": 0.5}))
    with pytest.raises(ConfigError, match="eta"):
        replay_stopping(telemetry, trials, results, SPEC, [{"rule": "dynamics", "rungs": [0.1], "eta": 1}])
    with pytest.raises(ValueError, match="order"):
        replay_stopping(telemetry, trials, results, SPEC, [DYN], order="random")


def test_default_replay_rules_cover_both_rules_etas_and_rungs() -> None:
    rules = default_replay_rules()
    assert len(rules) == 20 and len({rule_label(r) for r in rules}) == 20
    assert [r["rule"] for r in rules if r.get("mode") == "promote"] == ["dynamics", "asha"]
    rules = [r for r in rules if "mode" not in r]
    assert {(r["rule"], r["eta"], tuple(r["rungs"])) for r in rules} == {
        (rule, eta, rungs) for rule in ("dynamics", "asha") for eta in (2, 3, 4)
        for rungs in ((0.1,), (0.1, 0.25), (0.25,))}
    for r in rules:
        build_rule(r)


def test_analysis_reads_the_tables_of_a_real_store(tmp_path) -> None:
    """The same replay and correlations on ``store_tables`` of a SQLite store as on hand-built frames."""
    import json

    from tunescout.study.export import store_tables
    from tunescout.study.store import open_store

    specs = four({"a": 0.95, "b": 0.9, "c": 0.8, "d": 0.5}, val_loss={t: {10: 1.0} for t in "abcd"})
    trials, telemetry, results = make_tables(specs)
    store = open_store(tmp_path / "s.db")
    store.sync_trials("s", SPEC, [{**t, "hparams": {"learning_rate": i * 1e-4}, "config": {}}
                                  for i, t in enumerate(trials.to_dict("records"))])
    for t in "abcd":
        store.mark_running(t)
    for rec in telemetry.to_dict("records"):
        val = None if math.isnan(rec["val_loss"]) else rec["val_loss"]
        store.add_telemetry(rec["trial_id"], {**rec, "val_loss": val})
    for t in "abcd":
        store.finish(t, "completed", metrics={"accuracy": results.query(f"trial_id == '{t}'")["value"].iloc[-1]})
    tables = store_tables(store)
    spec = json.loads(store.study()["spec"])
    store.close()
    assert "hp.learning_rate" in tables["trials"]
    replay = replay_stopping(tables["telemetry"], tables["trials"], tables["results"], spec, [DYN])
    expected = replay_stopping(telemetry, trials, results, SPEC, [DYN])
    pd.testing.assert_frame_equal(replay.cohorts, expected.cohorts)
    corr = dynamics_correlations(tables["telemetry"], tables["trials"], tables["results"], spec, n_boot=50)
    assert corr.iloc[0]["n"] == 4 and corr.iloc[0]["rho_lowgrad_better"] == pytest.approx(0.8)


def test_signal_directions_say_which_direction_held_and_suggest_the_next_signals() -> None:
    from tunescout.analysis import signal_directions, signals_advice, suggest_signals

    corr = pd.DataFrame([
        {"level": "cohort", "model": "m", "dataset": "a", "method": "full", "n": 6,
         "rho_lowgrad_better": 0.8, "lowgrad_ci_lo": 0.3, "lowgrad_ci_hi": 0.95,
         "rho_highloss_better": -0.7, "highloss_ci_lo": -0.9, "highloss_ci_hi": -0.2},
        {"level": "pooled", "model": "all", "dataset": "all", "method": "all", "n": 12,
         "rho_lowgrad_better": 0.1, "lowgrad_ci_lo": -0.3, "lowgrad_ci_hi": 0.5,
         "rho_highloss_better": -0.6, "highloss_ci_lo": -0.8, "highloss_ci_hi": -0.3},
    ])
    d = signal_directions(corr).set_index(["level", "signal"])["held"].to_dict()
    assert d == {("cohort", "grad_norm"): "lower", ("cohort", "loss"): "lower",
                 ("pooled", "grad_norm"): "unclear", ("pooled", "loss"): "lower"}
    suggested = suggest_signals(signal_directions(corr))
    assert suggested == {"loss": "lower"}
    assert signals_advice(suggested).endswith("stopping: {rule: dynamics, signals: {loss: lower}}")
    nan = corr.assign(lowgrad_ci_lo=float("nan"), lowgrad_ci_hi=float("nan"),
                      highloss_ci_lo=float("nan"), highloss_ci_hi=float("nan"))
    assert suggest_signals(signal_directions(nan)) is None and "no early signal" in signals_advice(None)


def test_promote_replay_ranks_the_whole_cohort_at_each_rung_and_is_exact_on_full_curves() -> None:
    # six trials, grad norm 1..6 (lower is better), equal losses; final scores in the same order
    specs = [{"id": f"t{i}", "score": 1.0 - 0.1 * i, "grad": 1.0 + i} for i in range(6)]
    trials, telemetry, results = make_tables(specs)
    rule = {"rule": "dynamics", "mode": "promote", "rungs": [0.3, 0.6], "eta": 3, "signals": {"grad_norm": "lower"}}
    replay = replay_stopping(telemetry, trials, results, {**SPEC, "stopping": {"rule": "none"}}, [rule])
    per_trial = replay.trials.set_index("trial_id")
    # rung 1 (30 samples): the best ceil(6/3) = 2 continue; rung 2: ceil(2/3) = 1 continues
    assert per_trial["stopped"].to_dict() == {"t0": False, "t1": True, "t2": True, "t3": True, "t4": True, "t5": True}
    assert per_trial.loc[["t2", "t3", "t4", "t5"], "stop_samples"].tolist() == [30] * 4
    assert per_trial.at["t1", "stop_samples"] == 60
    row = replay.summary.iloc[0]
    assert row["token_fraction"] == pytest.approx((6 * 30 + 2 * 30 + 1 * 40) / 600)
    assert row["mean_regret_rel"] == 0 and row["best_kept_rate"] == 1.0
    assert replay.summary.attrs["note"] == ""  # a full grid: nothing left out


def test_replays_and_correlations_say_when_they_only_see_survivors() -> None:
    specs = [{"id": f"t{i}", "score": 1.0 - 0.1 * i, "grad": 1.0 + i} for i in range(5)]
    specs.append({"id": "gone", "score": None, "grad": 9.0, "status": "stopped", "upto": 30})
    trials, telemetry, results = make_tables(specs)
    spec = {**SPEC, "stopping": {"rule": "dynamics", "rungs": [0.3], "eta": 2}}
    note = replay_stopping(telemetry, trials, results, spec, [{"rule": "none"}]).summary.attrs["note"]
    assert "this study ran with stopping rule" in note and "1 trials" in note and "`stopping: none`" in note
    corr = dynamics_correlations(telemetry, trials, results, spec, n_boot=20)
    assert "These correlations use only the trials that ran to the end" in corr.attrs["note"]


# Planned 100 samples, grad norm only (lower is better), rungs 30% and 60%, eta 2, min_steps 3.
# a-d: 10 samples a step, judged at step 3 (30 samples). e: 2 steps of 50, never judged (fewer
# steps than min_steps). f: 25 a step, judged at step 3 (75 samples), past both rungs at once.
# g: 33 a step to 99, judged at step 3, its last record.
GRID = {"a": (1.0, 10, 100), "b": (2.0, 10, 100), "c": (3.0, 10, 100), "d": (4.0, 10, 100),
        "e": (9.0, 50, 100), "f": (1.5, 25, 100), "g": (0.5, 33, 99)}
RUNGS = {"rule": "dynamics", "rungs": [0.3, 0.6], "eta": 2, "min_steps": 3, "signals": {"grad_norm": "lower"}}


@pytest.mark.parametrize(("mode", "order", "stops"), [
    # async, a..g round-robin: at step 3 a is alone at rung 1; b ranks 2 of 2, c 3 of 3, d 4 of 4
    # → stopped; f (2 of 5) and g pass both rungs they cross at once; a passes rung 2 (2 of 3).
    ("async", "step", {t: (3, 30, "dynamics rung 1") for t in "bcd"}),
    # promote, in either order: rung 1 ranks the six that paused (e never does): g, a, f continue
    # (3 of 6), b, c, d stop where they paused. f and g paused past rung 2 and wait there; a
    # pauses at 60. Rung 2 ranks g, a, f: f stops at 75 samples. g, kept, has nothing left to train.
    *[("promote", order, {**{t: (3, 30, "dynamics promote rung 1") for t in "bcd"},
                          "f": (3, 75, "dynamics promote rung 2")}) for order in ("step", "progress")],
])
def test_replay_stops_each_trial_where_the_driver_would(mode: str, order: str, stops: dict) -> None:
    """The driver's semantics on one cohort, per policy: where a trial pauses or is judged (the
    first record past the rung with min_steps steps), a large batch judged at two rungs at one
    record, a trial too short to judge training to its end, a kept trial resumed at its end."""
    specs = [{"id": t, "grad": grad, "batch": size, "upto": upto, "score": 1.0 - grad / 10}
             for t, (grad, size, upto) in GRID.items()]
    trials, telemetry, results = make_tables(specs)
    replay = replay_stopping(telemetry, trials, results, SPEC, [{**RUNGS, "mode": mode}], order=order)
    rows = replay.trials.set_index("trial_id")
    stopped = rows[rows["stopped"]]
    assert {t: (r["stop_step"], r["stop_samples"], r["reason"].split(" (")[0]) for t, r in stopped.iterrows()} == stops
    assert (rows["tokens_used"] == [stops[t][1] * 10 if t in stops else GRID[t][2] * 10 for t in rows.index]).all()
    assert replay.cohorts.iloc[0]["best_kept"]  # g, the best, survives


@pytest.mark.parametrize("mode", ["async", "promote"])
def test_trials_shorter_than_min_steps_replay_as_they_run(mode: str) -> None:
    """Two steps of 50 samples, a rule that averages over 3: in a sweep such trials never pause
    or get judged at the rung and train to their end; the replay must say the same (it raised
    StopIteration, which ended `tune`, `analyze` and `report`)."""
    trials, telemetry, results = make_tables(four({"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6}), batch=50)
    rule = {"rule": "dynamics", "mode": mode, "rungs": [0.25], "eta": 2, "min_steps": 3}
    replay = replay_stopping(telemetry, trials, results, SPEC, [rule])
    cohort = replay.cohorts.iloc[0]
    assert cohort["n_stopped"] == 0 and cohort["token_fraction"] == pytest.approx(1.0) and cohort["best_kept"]
