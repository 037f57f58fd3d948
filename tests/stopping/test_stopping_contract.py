"""The stopping contract, one suite over every rule under both scheduling policies.

A small simulated driver feeds a cohort's records to :class:`Stopping` the way the sweep driver
does (a verdict at each record; under ``promote``, the cohort ranked once all of it waits), so
the same assertions hold for every rule and policy: everything ends, nothing depends on
arrival order where the policy promises it, a lone trial is never stopped, the best trial at a
rung always survives it, promotion keeps exactly the best ceil(n/eta), and ``none`` stops nothing.
"""

from __future__ import annotations

import math

import pytest

from tunescout.stopping.policies import MODES, Stopping, build_stopping
from tunescout.stopping.rules import RULES, TrialProgress, keep_count, rung_samples
from tunescout.train.telemetry import Pause
from test_stopping import evals_at, make_trial

RUNG = {"rungs": [0.25, 0.5], "eta": 3}
SPECS = {
    "none": {"rule": "none"},
    "dynamics": {"rule": "dynamics", **RUNG, "min_steps": 1},
    "asha-val_loss": {"rule": "asha", **RUNG},
    "asha-metric": {"rule": "asha", **RUNG, "signal": "metric"},
}
assert {s["rule"] for s in SPECS.values()} == set(RULES)  # a new rule must join the suite


def cohort(n: int = 7) -> list[TrialProgress]:
    """n trials of 1,000 samples (20 records), each with its own dynamics and evals at the rungs and
    the end; trial t{i} is better on every signal the larger i is, with no ties."""
    out = []
    for i in range(n):
        t = make_trial(f"t{i}", grad=2.0 - i / n, loss=1.0 + i / n)
        t.evals = evals_at(t, [250, 500, 1000], val_loss=3.0 - i / n, metric=0.1 + i / (2 * n))
        out.append(t)
    return out


def simulate(stopping: Stopping, trials: list[TrialProgress]) -> dict[str, tuple[str, int, str]]:
    """Feed the trials' records round-robin (in list order) as a driver would; returns each
    trial's end: ``(status, samples trained, stop reason)``."""
    progress = {t.trial_id: TrialProgress(t.trial_id, t.planned_samples, [], [], "running") for t in trials}
    members = list(progress.values())
    full = {t.trial_id: t for t in trials}
    decided: dict[str, int] = {}
    reasons: dict[str, str] = {}
    for _ in range(10_000):
        moved = False
        for tid, tp in progress.items():
            if tp.status != "running":
                continue
            moved = True
            rec = full[tid].telemetry[len(tp.telemetry)]
            tp.telemetry.append(rec)
            tp.evals = [e for e in full[tid].evals if e["samples"] <= rec["samples"]]
            verdict = stopping.verdict(tp, members, decided.get(tid, 0))
            if isinstance(verdict, str):
                tp.status, reasons[tid] = "stopped", verdict
            elif isinstance(verdict, Pause):
                tp.status = "paused"
            elif len(tp.telemetry) == len(full[tid].telemetry):
                tp.status = "completed"
        if moved:
            continue
        decision = stopping.ready(members, decided)
        if decision is None:
            break
        for row in decision.rows:
            decided[row["trial_id"]] = decision.rung
            if row["reason"] is not None:
                progress[row["trial_id"]].status, reasons[row["trial_id"]] = "stopped", row["reason"]
            elif row["trial_id"] in decision.resume:
                progress[row["trial_id"]].status = "running"
    return {tid: (tp.status, tp.telemetry[-1]["samples"] if tp.telemetry else 0, reasons.get(tid, ""))
            for tid, tp in progress.items()}


CASES = [(name, mode) for name in SPECS for mode in MODES]


def _stopping(name: str, mode: str) -> Stopping:
    return build_stopping({**SPECS[name], "mode": mode})


@pytest.mark.parametrize(("name", "mode"), CASES)
def test_every_trial_ends_completed_or_stopped(name: str, mode: str) -> None:
    ends = simulate(_stopping(name, mode), cohort())
    assert {status for status, _, _ in ends.values()} <= {"completed", "stopped"}
    for status, samples, reason in ends.values():
        if status == "completed":
            assert samples == 1000 and reason == ""
        else:
            assert samples < 1000 and "rung" in reason


@pytest.mark.parametrize(("name", "mode"), CASES)
def test_the_same_records_give_the_same_decisions(name: str, mode: str) -> None:
    trials = cohort()
    first = simulate(_stopping(name, mode), trials)
    assert simulate(_stopping(name, mode), cohort()) == first
    if mode == "promote":  # the whole cohort is ranked at once: arrival order cannot matter
        assert simulate(_stopping(name, mode), list(reversed(cohort()))) == first


@pytest.mark.parametrize(("name", "mode"), CASES)
def test_a_trial_alone_is_never_stopped(name: str, mode: str) -> None:
    assert simulate(_stopping(name, mode), cohort(1)) == {"t0": ("completed", 1000, "")}


@pytest.mark.parametrize(("name", "mode"), CASES)
def test_the_best_trial_survives_and_the_first_rung_stops_someone(name: str, mode: str) -> None:
    # Best first: under async a trial that arrives best so far always goes on, so a cohort that
    # arrives worst first would lose no one (that is async's known blind spot, not a contract).
    ends = simulate(_stopping(name, mode), list(reversed(cohort())))
    assert ends["t6"][0] == "completed"  # best on every signal
    first_rung = rung_samples(0.25, 1000)
    passed = sum(samples > first_rung for _, samples, _ in ends.values())
    if name == "none":
        assert passed == 7 and all(status == "completed" for status, _, _ in ends.values())
    else:
        assert 1 <= passed < 7  # a cohort with a clear order loses someone at the first rung
    if mode == "promote" and name != "none":  # ranked as a whole: exactly the best ceil(n/eta) go on
        assert keep_count(7, 3) == math.ceil(7 / 3) == 3
        assert {tid for tid, (_, samples, _) in ends.items() if samples > first_rung} == {"t4", "t5", "t6"}
