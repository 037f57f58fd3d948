"""Successive halving over checkpoints: the pure parts (ranking a rung once, when a cohort is
ready, what it costs, the launch order). The sweep tests run it for real."""

from __future__ import annotations

import pytest

from tunescout.config import ConfigError
from tunescout.stopping.policies import build_stopping
from tunescout.stopping.promotion import at_rung, decide_ready, expected_fraction, fair_order, pause_point, promote_rung
from test_stopping import evals_at, make_trial

DYN = {"rule": "dynamics", "mode": "promote", "rungs": [0.25, 0.5], "eta": 3, "min_steps": 1}


def _paused(tid: str, grad: float, loss: float, upto: int = 250, **kw):
    return make_trial(tid, grad, loss, upto=upto, status="paused", **kw)


def test_promote_rung_ranks_once_and_keeps_ceil_n_over_eta() -> None:
    rule = build_stopping(DYN).rule
    cohort = [_paused(f"t{i}", grad=1.0 + i, loss=2.0) for i in range(7)]  # lower grad norm is better
    rows = promote_rung(rule, 1, cohort)
    assert [r[0] for r in rows] == [f"t{i}" for i in range(7)] and [r[1] for r in rows] == list(range(1, 8))
    kept = [tid for tid, _, _, reason in rows if reason is None]
    assert kept == ["t0", "t1", "t2"]  # ceil(7 / 3)
    reason = rows[-1][3]
    assert reason.startswith("dynamics promote rung 1 (25% of samples): rank 7 of 7, outside top 1/3")
    assert "mean grad_norm 7" in reason


def test_ties_are_broken_by_trial_id_not_in_the_trials_favour() -> None:
    rule = build_stopping(DYN).rule
    cohort = [_paused(tid, 1.0, 2.0) for tid in ("tc", "ta", "td", "tb")]  # all equal
    rows = promote_rung(rule, 1, cohort)
    assert [r[0] for r in rows] == ["ta", "tb", "tc", "td"]
    assert sum(r[3] is None for r in rows) == 2  # exactly ceil(4/3): a tie keeps nobody extra


def test_asha_promotes_on_the_rung_evaluation() -> None:
    rule = build_stopping({"rule": "asha", "mode": "promote", "rungs": [0.25], "eta": 2}).rule
    cohort = []
    for i, val in enumerate([0.9, 0.3, 0.5, None]):
        t = _paused(f"t{i}", 1.0, 2.0)
        t.evals = evals_at(t, [250], val_loss=val, metric=None)
        cohort.append(t)
    rows = promote_rung(rule, 1, cohort)
    assert [r[0] for r in rows] == ["t1", "t2", "t0", "t3"]  # a missing value ranks worst
    assert [r[3] is None for r in rows] == [True, True, False, False]
    assert "val_loss n/a" in rows[3][3]


def test_a_cohort_is_ready_only_when_nothing_of_it_trains() -> None:
    rule = build_stopping(DYN).rule
    cohort = [_paused("ta", 1.0, 2.0), _paused("tb", 2.0, 2.0), make_trial("tc", 0.5, 2.0, upto=100)]
    assert decide_ready(rule, cohort, {}) is None  # tc still running below the rung
    cohort[2].status = "diverged"  # an end before the rung: not ranked, no longer waited for
    decision = decide_ready(rule, cohort, {})
    assert decision.rung == 1 and [r["trial_id"] for r in decision.rows] == ["ta", "tb"]
    assert decision.resume == {"ta"}


def test_kept_trials_past_the_next_rung_stay_paused_and_the_next_rung_follows() -> None:
    rule = build_stopping(DYN).rule
    # one large batch carried tb from below 25% to 60%: past rung 2 already
    cohort = [_paused("ta", 1.0, 2.0), _paused("tb", 1.5, 2.0, upto=600, batch=600), _paused("tc", 9.0, 2.0)]
    first = decide_ready(rule, cohort, {})
    assert first.rung == 1 and first.resume == {"ta"}  # ta resumes; tb stays paused; tc stops
    cohort[0].status, cohort[2].status = "pending", "stopped"
    assert decide_ready(rule, cohort, {t.trial_id: 1 for t in cohort}) is None  # ta trains again
    cohort[0] = _paused("ta", 1.0, 2.0, upto=500)
    second = decide_ready(rule, cohort, {"ta": 1, "tb": 1, "tc": 1})
    assert second.rung == 2 and {r["trial_id"] for r in second.rows} == {"ta", "tb"}


def test_pause_points_follow_each_trials_planned_samples() -> None:
    rule = build_stopping(DYN).rule
    assert [pause_point(rule, 1000, d) for d in range(3)] == [250, 500, None]
    assert pause_point(rule, 99, 0) == 25


@pytest.mark.parametrize(("n", "rungs", "eta", "expected"), [
    (12, [0.25], 3, (12 * 0.25 + 4 * 0.75) / 12),
    (9, [0.1, 0.3], 3, (9 * 0.1 + 3 * 0.2 + 1 * 0.7) / 9),
    (1, [0.5], 3, 1.0),
])
def test_expected_fraction(n: int, rungs: list, eta: float, expected: float) -> None:
    assert expected_fraction(n, rungs, eta) == pytest.approx(expected)


def test_fair_order_shuffles_within_and_interleaves_across_cohorts() -> None:
    ids = [f"a{i}" for i in range(8)] + [f"b{i}" for i in range(4)]
    cohort_of = {t: t[0] for t in ids}
    order = fair_order(ids, cohort_of, "study")
    assert sorted(order) == sorted(ids) and order == fair_order(ids, cohort_of, "study")
    assert [cohort_of[t] for t in order[:8]] == ["a", "b"] * 4
    assert [t for t in order if t[0] == "a"] != ids[:8]  # not the grid order
    assert fair_order(ids, cohort_of, "other") != order


def test_mode_is_validated_and_only_promote_promotes() -> None:
    assert build_stopping(DYN).promotes and not build_stopping({"rule": "dynamics"}).promotes
    assert not build_stopping({"rule": "none"}).promotes
    with pytest.raises(ConfigError, match="mode must be one of async, promote"):
        build_stopping({**DYN, "mode": "sync"})
    stopping = build_stopping(DYN)
    trial = make_trial("t0", 9.0, 2.0)
    # promote never stops a trial at an ask: it pauses it at a rung (or lets it go on)
    assert not any(isinstance(stopping.verdict(trial, [trial, make_trial("t1")], d), str) for d in range(3))


def test_a_large_batch_pauses_once_it_has_min_steps_steps() -> None:
    rule = build_stopping({**DYN, "min_steps": 3}).rule
    big = make_trial("big", 1.0, 2.0, batch=300)  # 300, 600, 900, 1000: past rung 1 (250) at once
    assert not at_rung(rule, big.telemetry[:1], 1000, 0) and not at_rung(rule, big.telemetry[:2], 1000, 0)
    assert at_rung(rule, big.telemetry[:3], 1000, 0)  # judged at its third step, 900 samples
    assert "over samples 0-900" in rule.describe(big, 0.25)


def test_min_trials_keeps_everyone_in_a_small_cohort() -> None:
    rule = build_stopping({**DYN, "min_trials": 5}).rule
    rows = promote_rung(rule, 1, [_paused(f"t{i}", 1.0 + i, 2.0) for i in range(3)])
    assert all(reason is None for *_, reason in rows)
