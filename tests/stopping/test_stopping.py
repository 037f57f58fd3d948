"""Stopping rules on synthetic telemetry: one contract suite run against every rule, then the
specific behaviour of each (which trials the recipe's rule stops, asynchrony, ties, missing
values, windows, ASHA's evals) and the errors of ``build_rule``."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace
from collections.abc import Callable, Sequence

import pytest

from tunescout.config import ConfigError
from tunescout.stopping.rules import (
    RULES,
    AshaRule,
    DynamicsRule,
    NoStopping,
    StoppingRule,
    TrialProgress,
    build_rule,
    dynamics_scores,
    parse_signals,
    window_means,
    window_stats,
)

Level = float | None | Callable[[int], float | None]


def make_trial(
    trial_id: str,
    grad: Level = 1.0,
    loss: Level = 2.0,
    *,
    planned: int = 1000,
    batch: int = 50,
    upto: int | None = None,
    evals: Sequence[dict] = (),
    status: str = "running",
) -> TrialProgress:
    """A trial whose step records carry ``grad``/``loss`` (a level, or a function of samples),
    one record per ``batch`` samples until ``upto`` (default: the planned end)."""
    upto = planned if upto is None else upto
    records, samples, step = [], 0, 0
    while samples < upto:
        step += 1
        samples = min(samples + batch, planned)
        g = grad(samples) if callable(grad) else grad
        lv = loss(samples) if callable(loss) else loss
        records.append({"step": step, "samples": samples, "loss": lv, "grad_norm": g, "lr": 1e-5})
    return TrialProgress(trial_id, planned, records, [dict(e) for e in evals], status)


def evals_at(trial: TrialProgress, points: Sequence[int], val_loss: float, metric: float | None) -> list[dict]:
    """Evals as the training loop takes them: at the first record at or past each point."""
    out = []
    for point in points:
        record = next(r for r in trial.telemetry if r["samples"] >= point)
        out.append({"step": record["step"], "samples": record["samples"], "val_loss": val_loss, "metric": metric})
    return out


def upto(trial: TrialProgress, n: int) -> TrialProgress:
    """The trial as the driver sees it after its n-th record (evals taken so far included)."""
    tel = trial.telemetry[:n]
    return TrialProgress(
        trial.trial_id, trial.planned_samples, tel, [e for e in trial.evals if e["samples"] <= tel[-1]["samples"]]
    )


def decisions(rule: StoppingRule, trial: TrialProgress, others: Sequence[TrialProgress]) -> list[str | None]:
    """What ``rule`` says after each record of ``trial``, the rest of the cohort as given."""
    return [rule.decide(upto(trial, n), [*others, upto(trial, n)]) for n in range(1, len(trial.telemetry) + 1)]


def is_crossing(rule: StoppingRule, trial: TrialProgress, n: int) -> bool:
    """Whether the n-th record is the first to reach one of the rule's rungs (and, for a rule
    with ``min_steps``, the first that is also at least that many steps in)."""
    min_steps = getattr(rule, "min_steps", 1)
    if n < min_steps:
        return False
    before = trial.telemetry[n - 2]["samples"] if n > 1 else 0
    now = trial.telemetry[n - 1]["samples"]
    rungs = getattr(rule, "rungs", ())
    crossed = [math.ceil(round(f * trial.planned_samples, 6)) for f in rungs]
    return any(before < r <= now or (n == min_steps and r <= now) for r in crossed)


# --- the contract, run against every rule ----------------------------------------------

SPECS = [
    {"rule": "none"},
    {"rule": "dynamics", "rungs": [0.1, 0.25], "eta": 3, "min_steps": 1},
    {"rule": "dynamics", "rungs": [0.2, 0.5], "eta": 2, "window": 0.1, "min_trials": 1},
    {"rule": "dynamics", "rungs": [0.02, 0.25], "eta": 3, "min_steps": 4},
    {"rule": "asha", "rungs": [0.1, 0.25], "eta": 3},
    {"rule": "asha", "rungs": [0.1, 0.25], "eta": 2, "signal": "metric", "min_trials": 1},
]


def contract_cohort(rule: StoppingRule) -> list[TrialProgress]:
    """Six trials, t5 the worst on every signal; batch 64 so rungs fall inside steps."""
    cohort = []
    for i in range(6):
        t = make_trial(f"t{i}", grad=1.0 + i, loss=3.0 - 0.2 * i, batch=64)
        points = sorted({*AshaRule(rungs=tuple(rule.rungs) or (0.1, 0.25)).eval_points(1000), 1000})
        t.evals = evals_at(t, points, val_loss=1.0 + 0.1 * i, metric=0.9 - 0.1 * i)
        cohort.append(t)
    return cohort


@pytest.fixture(params=SPECS, ids=[f"{s['rule']}-{i}" for i, s in enumerate(SPECS)])
def spec(request: pytest.FixtureRequest) -> dict:
    return request.param


def test_contract_rule_is_registered_and_matches_its_spec(spec: dict) -> None:
    rule = build_rule(spec)
    assert isinstance(rule, StoppingRule)
    assert rule.name == spec["rule"]
    assert RULES[rule.name] is type(rule)
    assert rule == build_rule(copy.deepcopy(spec))  # rebuilding from the spec gives the same rule
    hash(rule)  # frozen: nothing can change a rule after it is built


def test_contract_eval_points(spec: dict) -> None:
    rule = build_rule(spec)
    expected = [100, 250] if spec["rule"] == "asha" else []
    assert rule.eval_points(1000) == expected
    assert all(type(p) is int for p in rule.eval_points(999))


def test_contract_never_stops_a_lone_trial(spec: dict) -> None:
    lone_specs = [spec] + ([{**spec, "min_trials": 1}] if spec["rule"] != "none" else [])
    for s in lone_specs:
        rule = build_rule(s)
        for trial in contract_cohort(rule):
            assert decisions(rule, trial, []) == [None] * len(trial.telemetry), s


def test_contract_answers_only_at_rung_crossings_with_reasons_naming_the_rung(spec: dict) -> None:
    rule = build_rule(spec)
    cohort = contract_cohort(rule)
    stops = 0
    for trial in cohort:
        others = [c for c in cohort if c is not trial]
        for n, verdict in enumerate(decisions(rule, trial, others), start=1):
            assert verdict is None or isinstance(verdict, str)
            if verdict is not None:
                stops += 1
                assert is_crossing(rule, trial, n), (trial.trial_id, n, verdict)
                assert verdict.startswith(f"{rule.name} rung ")
    # Guard against a vacuous pass: every real rule stops the worst trial somewhere.
    assert (stops > 0) == (spec["rule"] != "none")


def test_contract_ask_points_mark_exactly_the_records_a_rule_judges(spec: dict) -> None:
    """A trial asks the driver only at its rule's ``ask_points``; they must be the crossings above,
    where alone a rule answers, so streaming the other records without a verdict loses no stop."""
    from tunescout.study.worker import asks_at

    rule = build_rule(spec)
    for trial in contract_cohort(rule):
        due = asks_at(rule.ask_points(trial.planned_samples))
        asked = [n for n, r in enumerate(trial.telemetry, start=1) if due(SimpleNamespace(**r))]
        assert asked == [n for n in range(1, len(trial.telemetry) + 1) if is_crossing(rule, trial, n)]
        assert bool(asked) == (spec["rule"] != "none")


def test_contract_is_pure(spec: dict) -> None:
    rule = build_rule(spec)
    cohort = contract_cohort(rule)
    for trial in cohort:
        for n in range(1, len(trial.telemetry) + 1):
            current = upto(trial, n)
            group = [current if c.trial_id == trial.trial_id else c for c in cohort]
            snapshot = copy.deepcopy((current, group, rule))
            first = rule.decide(current, group)
            assert rule.decide(current, group) == first  # asking twice changes nothing
            assert (current, group, rule) == snapshot  # inputs and rule untouched
            # A restarted driver rebuilds the rule from the spec and gets the same answer.
            assert build_rule(spec).decide(copy.deepcopy(current), copy.deepcopy(group)) == first


# --- dynamics: the recipe's rule ----------------------------------------------------------

# (grad_norm, loss) levels. By grad norm alone t0 is best; by the sum of ranks t1 and t2 are.
LEVELS = {"t0": (1.0, 2.0), "t1": (3.0, 2.6), "t2": (2.0, 2.4), "t3": (5.0, 2.2), "t4": (4.0, 1.8), "t5": (6.0, 1.6)}


def level_cohort(**kwargs) -> list[TrialProgress]:
    return [make_trial(tid, g, lv, **kwargs) for tid, (g, lv) in LEVELS.items()]


def norm(rank_sums: dict[str, float]) -> dict[str, float]:
    """Rank sums over the recipe's two signals → the score: the mean of the normalised ranks."""
    n = len(rank_sums)
    return pytest.approx({k: (v - 2) / (2 * (n - 1)) for k, v in rank_sums.items()})


def test_dynamics_scores_average_the_normalised_grad_norm_and_loss_ranks() -> None:
    # grad ranks: t0 1, t2 2, t1 3, t4 4, t3 5, t5 6; loss ranks (higher better): t1 1, t2 2, t3 3, t0 4, t4 5, t5 6
    assert dynamics_scores(level_cohort(), 0.1) == norm({"t0": 5, "t1": 4, "t2": 4, "t3": 8, "t4": 9, "t5": 12})
    assert dynamics_scores(level_cohort(), 0.1)["t0"] == pytest.approx(0.3)


def test_dynamics_keeps_the_best_third_at_the_first_rung() -> None:
    rule = DynamicsRule(min_steps=1, rungs=[0.1, 0.25], eta=3)
    cohort = level_cohort()
    verdicts = {t.trial_id: rule.decide(upto(t, 2), cohort) for t in cohort}  # record 2 = 100 samples = rung 1
    assert {tid for tid, v in verdicts.items() if v} == {"t0", "t3", "t4", "t5"}
    assert verdicts["t4"] == (
        "dynamics rung 1 (10% of samples): rank 5 of 6, outside top 1/3 "
        "(best 2 kept; mean grad_norm 4, mean loss 1.8 over samples 0-100)"
    )
    assert "rank 3 of 6" in verdicts["t0"]  # lowest grad norm, yet its low loss puts it third


def test_dynamics_decides_once_per_rung_at_the_crossing_record() -> None:
    rule = DynamicsRule(min_steps=1, rungs=[0.1, 0.25], eta=3)
    cohort = level_cohort()
    t5 = cohort[-1]
    got = decisions(rule, t5, cohort[:-1])
    assert [i for i, v in enumerate(got, start=1) if v] == [2, 5]  # 100 and 250 samples
    assert got[1].startswith("dynamics rung 1 (10% of samples): rank 6 of 6")
    assert got[4].startswith("dynamics rung 2 (25% of samples): rank 6 of 6")


def test_dynamics_judges_every_rung_a_large_step_crosses() -> None:
    rule = DynamicsRule(min_steps=1, rungs=[0.1, 0.25], eta=3)
    jumper = make_trial("big", grad=9.0, loss=0.5, batch=300)  # first record at 300: past both rungs
    verdict = rule.decide(upto(jumper, 1), [*level_cohort(), jumper])
    assert verdict is not None and verdict.startswith("dynamics rung 1 (10% of samples): rank 7 of 7")
    assert rule.decide(upto(jumper, 2), [*level_cohort(), jumper]) is None


def test_dynamics_judges_each_rung_on_its_own_window_in_one_step() -> None:
    # The others start badly and then train well; the jumper is middling all along. Its one
    # record covers both windows: it leads at rung 1 (0-100) and trails at rung 2 (150-250).
    rule = DynamicsRule(min_steps=1, rungs=[0.1, 0.25], eta=3, window=0.1)
    others = [
        make_trial(f"o{i}", lambda s: 5.0 if s <= 100 else 1.0, lambda s: 1.0 if s <= 100 else 3.0) for i in range(3)
    ]
    jumper = make_trial("big", grad=2.0, loss=2.0, batch=300)
    assert dynamics_scores([*others, jumper], 0.1, window=0.1)["big"] == 0.0
    verdict = rule.decide(upto(jumper, 1), [*others, jumper])
    assert verdict is not None and verdict.startswith("dynamics rung 2 (25% of samples): rank 4 of 4")


def test_dynamics_is_asynchronous() -> None:
    rule = DynamicsRule(min_steps=1, rungs=[0.1], eta=3, min_trials=2)
    first = make_trial("first", grad=6.0, loss=1.0)  # the worst of all, but alone at the rung
    second = make_trial("second", grad=1.0, loss=3.0)
    third = make_trial("third", grad=2.0, loss=2.0)
    behind = make_trial("behind", grad=0.1, loss=9.0, upto=50)  # best levels, rung not reached
    waiting = TrialProgress("waiting", 1000, [], status="pending")

    # The first to reach the rung has nobody to be compared with: it goes on.
    assert rule.decide(upto(first, 2), [upto(first, 2), upto(second, 1), upto(third, 1), behind, waiting]) is None
    # It is later stopped anyway (by the driver, say): its partial telemetry still counts.
    stopped_first = upto(first, 3)
    stopped_first.status = "stopped"
    # The second beats the first: kept (best 1 of 2).
    assert rule.decide(upto(second, 2), [stopped_first, upto(second, 2), upto(third, 1), behind, waiting]) is None
    # The third is judged against the first two only, and is second of three: outside the best one.
    verdict = rule.decide(upto(third, 2), [stopped_first, second, upto(third, 2), behind, waiting])
    assert verdict is not None and "rank 2 of 3, outside top 1/3 (best 1 kept" in verdict
    # The first's rung was decided when it crossed; later records do not reopen it.
    assert rule.decide(upto(first, 3), [first, second, third]) is None


def test_dynamics_min_trials() -> None:
    rule = DynamicsRule(min_steps=1, rungs=[0.1], eta=3, min_trials=3)
    good, bad, worse = make_trial("good", 1.0, 3.0), make_trial("bad", 2.0, 2.0), make_trial("worse", 3.0, 1.0)
    assert rule.decide(upto(bad, 2), [good, upto(bad, 2)]) is None  # 2 < min_trials at the rung
    assert "rank 3 of 3" in rule.decide(upto(worse, 2), [good, bad, upto(worse, 2)])


def test_dynamics_uses_the_trial_over_a_stale_copy_in_the_cohort() -> None:
    rule = DynamicsRule(min_steps=1, rungs=[0.1], eta=3)
    good, bad = make_trial("good", 1.0, 3.0), make_trial("bad", 2.0, 2.0)
    expected = rule.decide(upto(bad, 2), [good, upto(bad, 2)])
    assert expected is not None and "rank 2 of 2" in expected
    assert rule.decide(upto(bad, 2), [good, upto(bad, 1)]) == expected  # stale copy: one record behind
    assert rule.decide(upto(bad, 2), [good]) == expected  # no copy at all


def test_dynamics_ties_share_ranks_and_are_broken_by_trial_id() -> None:
    rule = DynamicsRule(min_steps=1, rungs=[0.1], eta=3)  # 3 trials: best 1 kept
    cohort = [make_trial("b", 1.0, 2.0), make_trial("a", 1.0, 2.0), make_trial("c", 2.0, 1.0)]
    assert dynamics_scores(cohort, 0.1) == norm({"a": 3, "b": 3, "c": 6})
    assert rule.decide(upto(cohort[1], 2), cohort) is None  # a: tied for first, first by id
    # b: the same score, second by id: a tie no longer keeps every tied trial (it kept both,
    # so a cohort of equals was never thinned)
    assert "rank 2 of 3" in rule.decide(upto(cohort[0], 2), cohort)
    assert "rank 3 of 3" in rule.decide(upto(cohort[2], 2), cohort)
    # A tie on one signal only: average rank 1.5 on loss.
    mixed = [make_trial("x", 1.0, 2.0), make_trial("y", 2.0, 2.0), make_trial("z", 3.0, 1.0)]
    assert dynamics_scores(mixed, 0.1) == norm({"x": 2.5, "y": 3.5, "z": 6.0})


def test_window_stats_skips_missing_and_non_finite_values() -> None:
    grads = [1.0, None, 3.0, math.nan]
    losses = [2.0, 4.0, None, math.inf]
    tel = [
        {"step": i + 1, "samples": 50 * (i + 1), "grad_norm": g, "loss": lv}
        for i, (g, lv) in enumerate(zip(grads, losses))
    ]
    assert window_stats(tel, 0, 200) == (2.0, 3.0)
    assert window_stats([{"step": 1, "samples": 50, "grad_norm": None, "loss": math.nan}], 0, 50) == (None, None)


def test_window_stats_counts_the_steps_that_trained_inside_the_window() -> None:
    tel = [{"step": i, "samples": 64 * i, "grad_norm": float(i), "loss": 10.0 * i} for i in range(1, 7)]
    # Spans: (0,64] (64,128] (128,192] (192,256] (256,320]: the 2nd to 4th overlap (100, 200],
    # the 4th because it is the step that crosses the end.
    assert window_stats(tel, 100, 200) == (3.0, 30.0)
    assert window_stats(tel, 0, 64) == (1.0, 10.0)
    with pytest.raises(ValueError, match="0 <= start < end"):
        window_stats(tel, 200, 200)


def test_dynamics_missing_values_rank_worst() -> None:
    cohort = [
        make_trial("g", 1.0, 2.0),
        make_trial("h", 2.0, 1.0),
        make_trial("n1", None, 3.0),  # no finite grad norm: worst on that signal, best on loss
        make_trial("n2", lambda s: math.nan, None),  # nothing finite: worst on both
    ]
    # grad ranks: g 1, h 2, n1 & n2 tie at 3.5; loss ranks: n1 1, g 2, h 3, n2 4
    assert dynamics_scores(cohort, 0.1) == norm({"g": 3.0, "h": 5.0, "n1": 4.5, "n2": 7.5})
    rule = DynamicsRule(min_steps=1, rungs=[0.1], eta=2)
    verdicts = {t.trial_id: rule.decide(upto(t, 2), cohort) for t in cohort}
    assert {k for k, v in verdicts.items() if v} == {"h", "n2"}
    assert "rank 4 of 4" in verdicts["n2"] and "mean grad_norm n/a, mean loss n/a" in verdicts["n2"]


def test_dynamics_window_restricts_the_records_that_count() -> None:
    # w starts terribly (first 100 samples) and then trains best of all.
    w = make_trial("w", lambda s: 10.0 if s <= 100 else 1.0, lambda s: 0.5 if s <= 100 else 3.0)
    others = [make_trial("o1", 2.0, 2.0), make_trial("o2", 2.5, 1.9), make_trial("o3", 3.0, 1.5)]
    cohort = [*others, w]
    # From the start: w means (5.5, 1.75) → grad rank 4 + loss rank 3 = 7, third of four.
    assert dynamics_scores(cohort, 0.2) == norm({"o1": 2.0, "o2": 4.0, "o3": 7.0, "w": 7.0})
    # Window (100, 200]: w means (1.0, 3.0) → best on both.
    assert dynamics_scores(cohort, 0.2, window=0.1) == norm({"o1": 4.0, "o2": 6.0, "o3": 8.0, "w": 2.0})

    without = DynamicsRule(min_steps=1, rungs=[0.2], eta=2).decide(upto(w, 4), cohort)
    assert without is not None and "rank 4 of 4" in without  # tied with o3, after it by id
    windowed = DynamicsRule(rungs=[0.2], eta=2, window=0.1, min_steps=1)
    assert windowed.decide(upto(w, 4), cohort) is None
    verdict = windowed.decide(upto(others[1], 4), cohort)
    assert verdict is not None and "rank 3 of 4" in verdict and "over samples 100-200" in verdict


def test_a_window_holds_at_least_min_steps_steps() -> None:
    tel = [{"step": i, "samples": 100 * i, "grad_norm": float(i), "loss": 1.0} for i in range(1, 6)]
    assert window_means(tel, 250, 300, ["grad_norm"]) == {"grad_norm": 3.0}  # one step in the window
    assert window_means(tel, 250, 300, ["grad_norm"], min_steps=3) == {"grad_norm": 2.0}  # steps 1-3
    assert window_means(tel, 0, 100, ["grad_norm"], min_steps=3) == {"grad_norm": 1.0}  # nothing before
    # A large-batch trial reaches the rung in one step; with min_steps its early steps count too.
    rule = DynamicsRule(rungs=[0.2], eta=2, window=0.05, min_steps=3)
    big = make_trial("big", lambda s: 9.0 if s <= 150 else 1.0, 2.0, batch=50)
    small = make_trial("small", 2.0, 2.0, batch=50)
    assert "mean grad_norm 6.333" in rule.describe(big, 0.2)  # (9 + 9 + 1) / 3 over samples 150-200
    # equal losses tie (0.5 each); on grad norm big leads with one step, trails with three
    assert DynamicsRule(rungs=[0.2], eta=2, window=0.05, min_steps=1).rung_scores(0.2, [big, small])["big"] == 0.25
    assert rule.rung_scores(0.2, [big, small])["big"] == 0.75


def test_signals_any_subset_direction_and_weight() -> None:
    cohort = level_cohort()
    by_grad = dynamics_scores(cohort, 0.1, signals=parse_signals({"grad_norm": "lower"}))
    assert min(by_grad, key=by_grad.get) == "t0" and by_grad["t5"] == 1.0
    low_loss = dynamics_scores(cohort, 0.1, signals=parse_signals({"loss": "lower"}))
    assert min(low_loss, key=low_loss.get) == "t5"  # the reversed direction
    weighted = dynamics_scores(cohort, 0.1, signals=parse_signals(
        {"grad_norm": {"direction": "lower", "weight": 3}, "loss": "higher"}))
    # t0: grad rank 1 (0.0), loss rank 4 (0.6) → (3 * 0 + 0.6) / 4
    assert weighted["t0"] == pytest.approx(0.15)
    rule = build_rule({"rule": "dynamics", "signals": {"loss": "lower"}, "rungs": [0.1]})
    assert rule.signals == (("loss", "lower", 1.0),) and rule == build_rule(
        {"rule": "dynamics", "signals": {"loss": "lower"}, "rungs": [0.1]})
    hash(rule)
    for bad, message in (({"val_loss": "lower"}, "unknown signal"), ({"loss": "up"}, "must be `lower` or `higher`"),
                         ({"loss": {"direction": "lower", "weight": 0}}, "weight must be a positive"),
                         ({}, "non-empty mapping"), ({"loss": {"dir": "lower"}}, "takes `direction` and `weight`")):
        with pytest.raises(ConfigError, match=message):
            build_rule({"rule": "dynamics", "signals": bad})


def test_dynamics_rungs_follow_each_trials_own_planned_samples() -> None:
    cohort = [
        make_trial("short", 1.0, 2.0),  # rung 0.1 at 100
        make_trial("long-behind", 1.0, 2.0, planned=2000, upto=150),  # rung at 200: not reached
        make_trial("long-there", 1.0, 2.0, planned=2000, upto=200),
    ]
    assert set(dynamics_scores(cohort, 0.1)) == {"short", "long-there"}


def test_dynamics_scores_rejects_bad_input() -> None:
    t = make_trial("a")
    with pytest.raises(ValueError, match="duplicate trial ids: \\['a'\\]"):
        dynamics_scores([t, make_trial("a")], 0.1)
    with pytest.raises(ValueError, match="window must be in"):
        dynamics_scores([t], 0.1, window=0.2)
    with pytest.raises(ValueError, match="rung_fraction must be in"):
        dynamics_scores([t], 0.0)


# --- asha -------------------------------------------------------------------------------


def asha_cohort(val_losses: Sequence[float], metrics: Sequence[float | None]) -> list[TrialProgress]:
    cohort = []
    for i, (vl, m) in enumerate(zip(val_losses, metrics)):
        t = make_trial(f"t{i}", batch=64)
        t.evals = evals_at(t, [100, 250], vl, m)  # taken at 128 and 256 samples
        cohort.append(t)
    return cohort


def test_asha_ranks_by_val_loss() -> None:
    # Metrics ordered the other way round: ranking on them would stop a different set.
    cohort = asha_cohort([1.0, 1.2, 0.9, 1.5, 1.1, 1.3], [0.9, 0.7, 0.95, 0.2, 0.8, 0.5])
    rule = AshaRule(rungs=[0.1, 0.25], eta=3)
    verdicts = {t.trial_id: rule.decide(upto(t, 2), cohort) for t in cohort}  # record 2 = 128 samples
    assert {k for k, v in verdicts.items() if v} == {"t1", "t3", "t4", "t5"}
    assert verdicts["t1"] == (
        "asha rung 1 (10% of samples): val_loss 1.2 at 128 samples, rank 4 of 6, outside top 1/3 (best 2 kept)"
    )


def test_asha_ranks_by_metric_in_either_direction() -> None:
    cohort = asha_cohort([1.0, 1.2, 0.9, 1.5, 1.1, 1.3], [0.5, 0.7, 0.4, 0.9, 0.6, 0.3])
    higher = AshaRule(rungs=[0.1], eta=3, signal="metric")
    stopped = {t.trial_id for t in cohort if higher.decide(upto(t, 2), cohort)}
    assert stopped == {"t0", "t2", "t4", "t5"}  # kept: t3 (0.9), t1 (0.7)
    lower = AshaRule(rungs=[0.1], eta=3, signal="metric", higher_is_better=False)
    assert {t.trial_id for t in cohort if lower.decide(upto(t, 2), cohort)} == {"t0", "t1", "t3", "t4"}
    assert "metric 0.6 at 128 samples, rank 3 of 6" in higher.decide(upto(cohort[4], 2), cohort)


def test_asha_keeps_ceil_n_over_eta() -> None:
    cohort = asha_cohort([1.0, 2.0, 3.0, 4.0], [None] * 4)
    rule = AshaRule(rungs=[0.1], eta=3)  # 4 / 3 → best 2 kept
    verdicts = [rule.decide(upto(t, 2), cohort) for t in cohort]
    assert verdicts[:2] == [None, None]
    assert verdicts[2] is not None and verdicts[2].endswith("rank 3 of 4, outside top 1/3 (best 2 kept)")


def test_asha_missing_metric_ranks_worst() -> None:
    cohort = asha_cohort([0.1, 0.2, 0.3], [None, 0.1, 0.2])  # best val_loss, but no metric
    rule = AshaRule(rungs=[0.1], eta=1.5, signal="metric")  # 3 trials: best 2 kept
    verdicts = [rule.decide(upto(t, 2), cohort) for t in cohort]
    assert verdicts[1:] == [None, None]
    assert verdicts[0] == (
        "asha rung 1 (10% of samples): metric n/a at 128 samples, rank 3 of 3, outside top 1/1.5 (best 2 kept)"
    )


def test_asha_waits_for_the_eval_of_the_rung() -> None:
    rule = AshaRule(rungs=[0.1, 0.25], eta=3)
    others = asha_cohort([0.5, 0.6], [None, None])
    late = make_trial("late", batch=64)
    late.evals = evals_at(late, [150, 250], val_loss=2.0, metric=None)  # taken at 192 and 256
    got = decisions(rule, late, others)
    # 128 crosses rung 1 but its eval does not exist yet; the eval taken at 192 decides it;
    # the eval at 256 decides rung 2.
    assert [i for i, v in enumerate(got, start=1) if v] == [3, 4]
    assert got[2].startswith("asha rung 1 (10% of samples): val_loss 2 at 192 samples, rank 3 of 3")
    assert got[3].startswith("asha rung 2 (25% of samples): val_loss 2 at 256 samples, rank 3 of 3")
    # An eval that does not yet belong to a reported step is not used.
    early_view = TrialProgress("late", 1000, late.telemetry[:2], late.evals)
    assert rule.decide(early_view, [*others, early_view]) is None
    # ...nor allowed to hide the eval that does (192 is rung 1's, 256 not reported yet).
    at_192 = TrialProgress("late", 1000, late.telemetry[:3], late.evals)
    assert rule.decide(at_192, [*others, at_192]) == got[2]


def test_asha_one_eval_past_two_rungs_is_judged_at_the_later_rung() -> None:
    rule = AshaRule(rungs=[0.1, 0.25], eta=3)
    others = asha_cohort([0.5, 0.6], [None, None])
    skipper = make_trial("skipper", batch=64)
    skipper.evals = evals_at(skipper, [250], val_loss=2.0, metric=None)  # only at 256
    got = decisions(rule, skipper, others)
    assert [i for i, v in enumerate(got, start=1) if v] == [4]
    assert got[3].startswith("asha rung 2 (25% of samples)")


def test_asha_first_trial_at_a_rung_goes_on() -> None:
    rule = AshaRule(rungs=[0.1], eta=3, min_trials=2)
    worst, best = asha_cohort([9.0, 0.1], [None, None])
    assert rule.decide(upto(worst, 2), [upto(worst, 2), upto(best, 1)]) is None
    assert "rank 2 of 2" in rule.decide(upto(worst, 2), [upto(worst, 2), best])


def test_asha_eval_points_round_up() -> None:
    assert AshaRule(rungs=[0.1, 0.25]).eval_points(1000) == [100, 250]
    assert AshaRule(rungs=[0.1, 0.25]).eval_points(999) == [100, 250]
    assert AshaRule(rungs=[0.1, 0.25]).eval_points(1001) == [101, 251]
    assert AshaRule(rungs=[0.1, 0.15]).eval_points(10) == [1, 2]
    assert AshaRule(rungs=[0.1, 0.12]).eval_points(5) == [1]  # two rungs, one point
    assert AshaRule(rungs=[0.07]).eval_points(100) == [7]  # 0.07 * 100 is 7.000000000000001 in binary
    with pytest.raises(ValueError, match="planned_samples"):
        AshaRule().eval_points(0)


# --- building rules from specs ------------------------------------------------------------


def test_build_rule_builds_each_rule_with_its_parameters() -> None:
    spec = {"rule": "dynamics", "rungs": [0.1, 0.25], "eta": 3, "window": 0.05}
    rule = build_rule(spec)
    assert rule == DynamicsRule(rungs=(0.1, 0.25), eta=3.0, window=0.05, min_trials=2)
    assert rule.rungs == (0.1, 0.25) and isinstance(rule.eta, float)
    assert spec == {"rule": "dynamics", "rungs": [0.1, 0.25], "eta": 3, "window": 0.05}  # not consumed
    assert build_rule({"rule": "none"}) == NoStopping()
    asha = build_rule({"rule": "asha", "rungs": [0.2], "signal": "metric", "higher_is_better": False})
    assert asha == AshaRule(rungs=(0.2,), signal="metric", higher_is_better=False)
    assert set(RULES) == {"none", "dynamics", "asha"}
    assert all(cls().name == key for key, cls in RULES.items())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"rule": "dynamic"}, "unknown stopping rule `dynamic` (did you mean `dynamics`?)"),
        ({"rule": "dynamics", "etta": 2}, "unknown key `etta` for stopping rule `dynamics` (did you mean `eta`?)"),
        ({"rule": "asha", "signals": "metric"}, "key `signals` for stopping rule `asha` (did you mean `signal`?)"),
        ({"rule": "none", "eta": 3}, "unknown key `eta` for stopping rule `none`; valid: no parameters"),
        ({"eta": 3}, "stopping: missing `rule`"),
        ({"rule": "dynamics", "rungs": [0.25, 0.1]}, "rungs must be strictly increasing"),
        ({"rule": "dynamics", "rungs": [0.1, 0.1]}, "rungs must be strictly increasing"),
        ({"rule": "asha", "rungs": [0.0, 0.5]}, "in (0, 1)"),
        ({"rule": "asha", "rungs": [0.5, 1.0]}, "in (0, 1)"),
        ({"rule": "dynamics", "rungs": []}, "non-empty list"),
        ({"rule": "dynamics", "rungs": "0.1"}, "non-empty list"),
        ({"rule": "dynamics", "eta": 1}, "eta must be a number > 1"),
        ({"rule": "asha", "eta": True}, "eta must be a number > 1"),
        ({"rule": "dynamics", "rungs": [0.1, 0.25], "window": 0.2}, "window must be in (0, first rung=0.1]"),
        ({"rule": "dynamics", "window": 0}, "window must be in"),
        ({"rule": "dynamics", "min_trials": 0}, "min_trials must be an int >= 1"),
        ({"rule": "asha", "min_trials": 2.5}, "min_trials must be an int >= 1"),
        ({"rule": "asha", "signal": "accuracy"}, "signal must be 'val_loss' or 'metric'"),
        ({"rule": "asha", "higher_is_better": "yes"}, "higher_is_better must be true or false"),
    ],
)
def test_build_rule_errors(spec: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_rule(spec)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_build_rule_needs_a_mapping() -> None:
    with pytest.raises(ValueError, match="expected a mapping"):
        build_rule(["dynamics"])  # type: ignore[arg-type]


def test_trial_progress_validates() -> None:
    with pytest.raises(ValueError, match="planned_samples must be a positive int"):
        TrialProgress("a", 0, [])
    with pytest.raises(ValueError, match="status 'resting' is not one of"):
        TrialProgress("a", 10, [], status="resting")
