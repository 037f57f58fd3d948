"""Successive halving over checkpoints (``mode: promote``, applied by
:class:`~tunescout.stopping.policies.PromotePolicy`): where trials pause, when a cohort is ready to
be ranked at a rung, what that costs, and a fair launch order.

Pure functions over :class:`~tunescout.stopping.rules.TrialProgress`; the sweep driver applies
what they return and records it in the store, so a restarted driver recomputes the same thing
from the same records.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

from tunescout.stopping.rules import StoppingRule, TrialProgress, keep_count, rung_samples

__all__ = ["RungDecision", "at_rung", "decide_ready", "expected_fraction", "fair_order", "pause_point", "promote_rung"]


def promote_rung(rule: StoppingRule, index: int,
                 cohort: Sequence[TrialProgress]) -> list[tuple[str, int, int, str | None]]:
    """Successive halving at rung ``index`` (1-based): rank the trials of ``cohort`` that reached
    it, once, and keep the best ceil(n / eta).

    Ties on the score are broken by trial id, a hash of the trial's config: deterministic, and
    unrelated to where the trial sits in the grid or to which trial arrived first.

    Returns:
        ``(trial_id, rank, n, reason)`` best first, for each trial that reached the rung: reason
        None for the ones that continue, a reason naming the rung and the rank for the others.
    """
    fraction = rule.rungs[index - 1]
    scores = rule.rung_scores(fraction, cohort)
    order = sorted(scores, key=lambda t: (scores[t] is None, scores[t] if scores[t] is not None else 0.0, t))
    n = len(order)
    keep = n if n < rule.min_trials else keep_count(n, rule.eta)  # too few to judge: all go on
    by_id = {t.trial_id: t for t in cohort}
    return [(tid, rank, n, None if rank <= keep else (
        f"{rule.name} promote rung {index} ({round(fraction * 100, 4):g}% of samples): rank {rank} of {n}, outside top "
        f"1/{rule.eta:g} (best {keep} continue; {rule.describe(by_id[tid], fraction)})"))
        for rank, tid in enumerate(order, start=1)]


def pause_point(rule: StoppingRule, planned_samples: int, decided: int) -> int | None:
    """Samples at which a trial with ``decided`` rungs behind it pauses next (None: past the last)."""
    if decided >= len(rule.rungs):
        return None
    return rung_samples(rule.rungs[decided], planned_samples)


def at_rung(rule: StoppingRule, telemetry: Sequence[dict], planned_samples: int, decided: int) -> bool:
    """Whether a trial's records reach its next rung: past its samples, and at least ``min_steps``
    steps for a rule that averages over steps (a large batch waits a step or two past the rung)."""
    point = pause_point(rule, planned_samples, decided)
    return point is not None and bool(telemetry) and telemetry[-1]["samples"] >= point and \
        len(telemetry) >= rule.min_steps


@dataclass(frozen=True)
class RungDecision:
    """One cohort ranked at one rung: each trial's rank and fate, and who resumes now."""

    rung: int
    rows: tuple[dict, ...]
    """``{trial_id, rank, n, reason}`` best first; reason None = continues."""
    resume: frozenset[str]
    """Kept trials to launch again (kept ones already past the next rung stay paused)."""


def decide_ready(rule: StoppingRule, members: Sequence[TrialProgress],
                 decided: Mapping[str, int]) -> RungDecision | None:
    """The decision a cohort is ready for, or None while any of it is still training.

    A cohort is ready at rung k when none of its trials is pending or running and its paused
    trials have k - 1 rungs decided: each reached rung k, and the trials that ended before it
    (diverged, failed) are not ranked. The decision is :func:`promote_rung` over the paused ones.
    """
    if any(t.status in ("pending", "running") for t in members):
        return None
    paused = [t for t in members if t.status == "paused"]
    if not paused:
        return None
    rung = min(decided.get(t.trial_id, 0) for t in paused) + 1
    candidates = [t for t in paused if decided.get(t.trial_id, 0) == rung - 1]
    rows = tuple({"trial_id": tid, "rank": rank, "n": n, "reason": reason}
                 for tid, rank, n, reason in promote_rung(rule, rung, candidates))
    unranked = {t.trial_id for t in candidates} - {r["trial_id"] for r in rows}
    if unranked:  # paused short of the rung: a decision without them would loop or strand them
        raise RuntimeError(f"rung {rung}: paused trials {sorted(unranked)} have not reached it")
    by_id = {t.trial_id: t for t in candidates}
    resume = set()
    for row in rows:
        if row["reason"] is None:
            t = by_id[row["trial_id"]]
            if not at_rung(rule, t.telemetry, t.planned_samples, rung):
                resume.add(t.trial_id)
    return RungDecision(rung, rows, frozenset(resume))


def expected_fraction(n: int, rungs: Sequence[float], eta: float) -> float:
    """The share of a cohort's full-grid compute that promotion trains, for n trials of equal size:
    every trial to the first rung, then the kept ceil(n_k / eta) from each rung to the next, and
    the last survivors to the end."""
    if n < 1:
        return 0.0
    total, alive, previous = 0.0, n, 0.0
    for fraction in rungs:
        total += alive * (fraction - previous)
        alive, previous = keep_count(alive, eta), fraction
    total += alive * (1.0 - previous)
    return total / n


def fair_order(trial_ids: Sequence[str], cohort_of: Mapping[str, Hashable], seed: str) -> list[str]:
    """Launch order: shuffled within each cohort (seeded, so a rerun keeps it) and interleaved
    across cohorts, so no grid position is systematically first to reach a rung."""
    rng = random.Random(seed)
    groups: dict[Hashable, list[str]] = {}
    for tid in trial_ids:
        groups.setdefault(cohort_of[tid], []).append(tid)
    for key in sorted(groups, key=repr):
        rng.shuffle(groups[key])
    queues = [groups[k] for k in sorted(groups, key=repr)]
    order: list[str] = []
    while any(queues):
        for q in queues:
            if q:
                order.append(q.pop(0))
    return order
