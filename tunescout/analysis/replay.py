"""Replay stopping rules on trials that ran to the end: what would stopping early have cost?

Each rule sees the completed trials' telemetry record by record, in an order that interleaves
trials as a sweep would, through the same ``Stopping`` (verdicts, pauses, rung rankings) the
sweep driver applies. We report the compute the rule would have used and the regret (best kept
final score vs the true best).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tunescout.analysis.dynamics import dataset_metrics, final_scores, planned_samples, records_by_trial, survivor_note
from tunescout.study.keys import COHORT
from tunescout.stopping.policies import Stopping, Verdict, build_stopping
from tunescout.stopping.rules import StoppingRule, TrialProgress
from tunescout.train.telemetry import Pause

__all__ = ["StoppingReplay", "default_replay_rules", "replay_stopping", "rule_label"]


# --- replaying stopping rules --------------------------------------------------------------


def default_replay_rules() -> list[dict[str, Any]]:
    """The recipe's rule and ASHA at η ∈ {2, 3, 4}, judged at 10%, at 10% and 25%, or at 25%;
    and both in ``promote`` mode at η = 3, rungs 10% and 25%."""
    return [{"rule": rule, "rungs": rungs, "eta": eta}
            for rule in ("dynamics", "asha") for eta in (2, 3, 4) for rungs in ([0.1], [0.1, 0.25], [0.25])] + [
        {"rule": rule, "mode": "promote", "rungs": [0.1, 0.25], "eta": 3} for rule in ("dynamics", "asha")]


def rule_label(spec: Mapping[str, Any]) -> str:
    """A short, stable name for a rule spec, e.g. ``dynamics eta=2 rungs=[0.1]``."""
    params = " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(spec.items()) if k != "rule")
    return f"{spec.get('rule')} {params}".strip()


@dataclass(frozen=True)
class StoppingReplay:
    """What each rule would have done on the trials that ran to the end."""

    summary: pd.DataFrame
    """One row per rule: ``rule, spec, replayable, reason, n_cohorts, n_replayed, n_trials,
    n_stopped, tokens_used, tokens_full, token_fraction, compute_saved, mean_regret_rel,
    max_regret_rel, best_kept_rate`` (over the replayed cohorts)."""
    cohorts: pd.DataFrame
    """One row per rule × cohort: ``replayable, reason, n_trials, n_excluded, n_stopped, tokens_*,
    token_fraction, metric, best_score, best_kept_score, regret, regret_rel, best_kept``."""
    trials: pd.DataFrame
    """One row per rule × replayed trial: ``stopped, stop_step, stop_samples, tokens_used,
    tokens_full, score, reason``."""


def _arrival(ids: Sequence[str], recs: Mapping[str, list[dict]], planned: Mapping[str, int],
             order: str) -> Iterator[tuple[str, int]]:
    """(trial, record index) in the order the driver would receive them with every trial running
    at once. ``step``: round-robin by step (each trial's k-th record, trials in id order).
    ``progress``: by fraction of planned samples reached, ties in id order — as if trials trained
    samples at the same speed whatever their batch size."""
    if order == "step":
        for k in range(max(len(recs[t]) for t in ids)):
            yield from ((t, k) for t in ids if k < len(recs[t]))
    else:
        keyed = [(r["samples"] / planned[t], i, k, t) for i, t in enumerate(ids) for k, r in enumerate(recs[t])]
        yield from ((t, k) for _, _, k, t in sorted(keyed))


def _eval_of(rec: Mapping[str, Any], metric: float | None) -> dict | None:
    """The eval the driver derives from a record: its val_loss and the task metric taken with it."""
    if rec.get("val_loss") is None and metric is None:
        return None
    return {"samples": rec["samples"], "val_loss": rec.get("val_loss"), "metric": metric}


def _why_not(rule: StoppingRule, ids: Sequence[str], recs: Mapping[str, list[dict]], planned: Mapping[str, int],
             metric_at: Mapping[tuple[str, int], float]) -> str:
    """Why a cohort cannot be replayed under ``rule`` ('' if it can). Rules that read evaluations
    need one at the record that first reaches each rung, which exists only where the study asked
    for an evaluation at that sample count; judging on a later eval would replay another rule."""
    if not ids:
        return "no completed trials with telemetry"
    signal = getattr(rule, "signal", "val_loss")

    def value(t: str, rec: Mapping[str, Any]) -> float | None:
        return rec.get("val_loss") if signal == "val_loss" else metric_at.get((t, rec["samples"]))

    for t in ids:
        for point in rule.eval_points(planned[t]):
            rec = next((r for r in recs[t] if r["samples"] >= point), None)
            if rec is None or value(t, rec) is None:
                seen = [r["samples"] for r in recs[t] if value(t, r) is not None]
                return (f"{rule.name} needs {signal} at {point} samples (a rung of trial {t}, planned "
                        f"{planned[t]}), but the study recorded evaluations only at samples {seen}; "
                        f"sweep with eval_at_samples at the rungs to replay it")
    return ""


@dataclass
class _CohortSweep:
    """One cohort swept again with every trial running at once, stepped as the sweep driver steps
    its ``DriverState`` (``on_record``, ``on_done``, ``decide``) through the same ``Stopping``: so
    the replay answers what the driver would have answered, in either mode, and cannot drift
    from it. Resumes are exact, so a kept trial goes on with the records it ran to the end."""

    stopping: Stopping
    records: Mapping[str, list[dict]]
    metric_at: Mapping[tuple[str, int], float]
    progress: dict[str, TrialProgress]
    decided: dict[str, int] = field(default_factory=dict)
    """The rungs decided so far for each trial (promote), as the driver counts them."""
    stopped: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Each stopped trial: the index of the record it stopped at, and the reason."""

    def running(self) -> bool:
        """Whether any trial still trains: until none does, a paused cohort may yet be ranked."""
        return any(tp.status == "running" for tp in self.progress.values())

    def step(self, t: str) -> None:
        """Feed a running trial its next record; if its run ends there (stopped, paused at a rung
        or at its last record), record the end and rank the cohort where that made it ready."""
        verdict = self.on_record(t)
        tp = self.progress[t]
        if isinstance(verdict, Pause):
            tp.status = "paused"
        elif verdict:
            self.stop(t, verdict)
        elif len(tp.telemetry) == len(self.records[t]):
            tp.status = "completed"
        else:
            return
        self.decide()

    def on_record(self, t: str) -> Verdict:
        """The driver's ``on_record`` for an ask: add the record and the eval taken with it, and
        return the verdict. Every record asks; the contract makes the verdict None except at a
        rule's ask points, so this is what the driver answers where the trial asks."""
        tp = self.progress[t]
        rec = self.records[t][len(tp.telemetry)]
        tp.telemetry.append(rec)
        if (ev := _eval_of(rec, self.metric_at.get((t, rec["samples"])))) is not None:
            tp.evals.append(ev)
        return self.stopping.verdict(tp, list(self.progress.values()), self.decided.get(t, 0))

    def decide(self) -> None:
        """The driver's ``decide``: rank the cohort at every rung it is ready for (never under
        ``async``); those outside the kept stop where they paused, kept ones resume."""
        while (decision := self.stopping.ready(list(self.progress.values()), self.decided)) is not None:
            for row in decision.rows:
                t = row["trial_id"]
                self.decided[t] = decision.rung
                if row["reason"] is not None:
                    self.stop(t, row["reason"])
                elif t in decision.resume:
                    self.resume(t)

    def stop(self, t: str, reason: str) -> None:
        """End a trial at the record it is at: it costs the tokens it trained up to there."""
        tp = self.progress[t]
        tp.status = "stopped"
        self.stopped[t] = (len(tp.telemetry) - 1, reason)

    def resume(self, t: str) -> None:
        """Launch a kept trial again at once (here no trial waits for a slot). One that paused at
        its last record has nothing left to train: its run ends at once, completed."""
        tp = self.progress[t]
        tp.status = "running" if len(tp.telemetry) < len(self.records[t]) else "completed"


def _replay_cohort(stopping: Stopping, ids: Sequence[str], recs: Mapping[str, list[dict]],
                   planned: Mapping[str, int], metric_at: Mapping[tuple[str, int], float],
                   order: str) -> dict[str, tuple[int, str]]:
    """Sweep the cohort's records through ``stopping`` in arrival order until no trial runs;
    returns the trials it stopped, with the index of the record they stopped at and the reason.

    A pass over the arrivals feeds each running trial the records it has not trained yet; a
    trial paused at a rung waits, and the passes go on while a ranking has resumed some."""
    sweep = _CohortSweep(stopping, recs, metric_at, {t: TrialProgress(t, planned[t], [], [], "running") for t in ids})
    arrivals = list(_arrival(ids, recs, planned, order))
    while sweep.running():
        for t, k in arrivals:
            tp = sweep.progress[t]
            if tp.status == "running" and k == len(tp.telemetry):
                sweep.step(t)
    return sweep.stopped


def replay_stopping(
    telemetry: pd.DataFrame,
    trials: pd.DataFrame,
    results: pd.DataFrame,
    spec: Any,
    rules: Sequence[Mapping[str, Any]] | None = None,
    order: str = "step",
) -> StoppingReplay:
    """Simulate stopping rules on the trials that ran to the end, as the sweep driver applies them.

    Only ``completed`` trials take part: they alone tell what a stopped trial would have scored.
    Each cohort's records are fed one by one (interleaved across trials, see ``order``) to
    ``build_stopping(rule).verdict(trial, cohort, decided)``, the cohort's progress growing as
    records arrive and stopped trials keeping their partial telemetry, exactly as in a sweep.
    Under ``mode: promote`` a trial pauses at each rung, the cohort is ranked by
    ``Stopping.ready`` once all of it waits, and the kept trials resume from where they paused
    (resumes are exact, so this is what the real run does on the same curves; a trial with fewer
    steps than the rule averages over never pauses and trains to its end). A stopped trial
    costs the tokens it had trained when stopped.

    Regret is the final score lost by keeping only the unstopped trials: (best final score of
    the cohort − best final score among the kept), oriented so it is ≥ 0 whatever the metric's
    direction; ``regret_rel`` divides it by |best|. The asynchronous rules never let a trial wait
    for another, so the arrival order changes which trials are stopped: the order is fixed and
    reported, not random. Promotion ranks a whole cohort at once, so the order does not matter there.

    Args:
        telemetry, trials, results: the study's tables.
        spec: the study spec (dataset metrics for the final scores).
        rules: stopping rule specs (``{"rule": "dynamics", "rungs": [0.1], "eta": 3}``, …);
            None = ``default_replay_rules()``.
        order: ``step`` (round-robin by step) or ``progress`` (by fraction of planned samples).

    Returns:
        A ``StoppingReplay`` (summary per rule, per rule × cohort, per rule × trial). A rule that
        needs evaluations the study did not record is reported not replayable, with the reason.

    Raises:
        ConfigError: an invalid rule spec. ValueError: an unknown ``order``.
    """
    if order not in ("step", "progress"):
        raise ValueError(f"order must be 'step' or 'progress', got {order!r}")
    rules = default_replay_rules() if rules is None else list(rules)
    built = {rule_label(r): (dict(r), build_stopping(r)) for r in rules}  # a bad spec fails before any work
    scores = final_scores(trials, results, spec).set_index("trial_id")
    records = records_by_trial(telemetry)
    metric_of = dict(dataset_metrics(spec))
    dataset_of = dict(zip(trials["trial_id"], trials["dataset"]))
    metric_at = {} if results.empty else {
        (r["trial_id"], int(r["samples"])): r["value"] for r in results.to_dict("records")
        if r["trial_id"] in dataset_of and r["name"] == metric_of[dataset_of[r["trial_id"]]] and pd.notna(r["value"])}
    cohorts = []
    for key, g in trials.groupby(list(COHORT), sort=True):
        done = g[(g["status"] == "completed") & g["trial_id"].isin(records)]
        ids = sorted(done["trial_id"])
        planned = {r["trial_id"]: planned_samples(r, records[r["trial_id"]]) for r in done.to_dict("records")}
        cohorts.append((key, ids, planned, len(g) - len(ids)))
    cohort_rows, trial_rows = [], []
    for label, (_, stopping) in built.items():
        rule = stopping.rule
        for key, ids, planned, excluded in cohorts:
            row = {"rule": label, **dict(zip(COHORT, key)), "n_trials": len(ids), "n_excluded": excluded}
            reason = _why_not(rule, ids, records, planned, metric_at)
            if reason:
                cohort_rows.append({**row, "replayable": False, "reason": reason})
                continue
            stopped = _replay_cohort(stopping, ids, records, planned, metric_at, order)
            for t in ids:
                k, why = stopped.get(t, (len(records[t]) - 1, ""))
                trial_rows.append({"rule": label, "trial_id": t, **dict(zip(COHORT, key)), "stopped": t in stopped,
                                   "stop_step": records[t][k]["step"] if t in stopped else np.nan,
                                   "stop_samples": records[t][k]["samples"] if t in stopped else np.nan,
                                   "tokens_used": records[t][k]["tokens"], "tokens_full": records[t][-1]["tokens"],
                                   "score": scores.at[t, "score"], "reason": why})
            cohort_rows.append({**row, "replayable": True, "reason": "",
                                **_cohort_outcome(ids, stopped, records, scores)})
    cohort_frame = pd.DataFrame(cohort_rows, columns=[
        "rule", *COHORT, "replayable", "reason", "n_trials", "n_excluded", "n_stopped", "tokens_used", "tokens_full",
        "token_fraction", "metric", "best_score", "best_kept_score", "regret", "regret_rel", "best_kept"])
    summary = pd.DataFrame([_summarise(rspec, label, cohort_frame) for label, (rspec, _) in built.items()],
                           columns=SUMMARY_COLUMNS)
    trial_frame = pd.DataFrame(trial_rows, columns=["rule", "trial_id", *COHORT, "stopped", "stop_step", "stop_samples",
                                                    "tokens_used", "tokens_full", "score", "reason"])
    summary.attrs["note"] = survivor_note(spec, sum(excluded for *_, excluded in cohorts), "replays")
    return StoppingReplay(summary, cohort_frame, trial_frame)



def _cohort_outcome(ids: Sequence[str], stopped: Mapping[str, Any], records: Mapping[str, list[dict]],
                    scores: pd.DataFrame) -> dict[str, Any]:
    """Tokens used against the full cohort's, and the final score the stops cost."""
    used = sum(records[t][stopped[t][0] if t in stopped else -1]["tokens"] for t in ids)
    full = sum(records[t][-1]["tokens"] for t in ids)
    sub = scores.loc[list(ids)]
    metric, higher = sub["metric"].iloc[0], bool(sub["higher_is_better"].iloc[0])
    sign = 1.0 if higher else -1.0
    oriented = sign * sub["score"].astype(float)
    kept = oriented[[t not in stopped for t in ids]]
    best = oriented.max()  # NaN when no trial has a score
    best_kept = kept.max() if kept.notna().any() else math.nan
    regret = best - best_kept
    return {"n_stopped": len(stopped), "tokens_used": used, "tokens_full": full,
            "token_fraction": used / full if full else math.nan, "metric": metric,
            "best_score": sign * best, "best_kept_score": sign * best_kept, "regret": regret,
            "regret_rel": regret / abs(best) if pd.notna(best) and best != 0 else math.nan,
            "best_kept": bool(regret == 0)}


SUMMARY_COLUMNS = ["rule", "spec", "replayable", "reason", "n_cohorts", "n_replayed", "n_trials", "n_stopped",
                   "tokens_used", "tokens_full", "token_fraction", "compute_saved", "mean_regret_rel",
                   "max_regret_rel", "best_kept_rate"]


def _summarise(spec: Mapping[str, Any], label: str, cohorts: pd.DataFrame) -> dict[str, Any]:
    """A rule's totals over the cohorts it could be replayed on."""
    mine = cohorts[cohorts["rule"] == label]
    done = mine[mine["replayable"]]
    reasons = mine.loc[~mine["replayable"], "reason"]
    used, full = done["tokens_used"].sum(), done["tokens_full"].sum()
    fraction = used / full if full else math.nan
    # A rule replayed on some cohorts says how many it skipped, so its reason never reads as if
    # the rows it did replay were not replayable.
    reason = "" if reasons.empty else reasons.iloc[0] if done.empty else (
        f"{len(reasons)} of {len(mine)} cohorts skipped: {reasons.iloc[0]}")
    return {"rule": label, "spec": json.dumps(dict(spec), sort_keys=True), "replayable": len(done) > 0,
            "reason": reason, "n_cohorts": len(mine), "n_replayed": len(done),
            "n_trials": int(done["n_trials"].sum()), "n_stopped": int(done["n_stopped"].sum()),
            "tokens_used": used, "tokens_full": full, "token_fraction": fraction, "compute_saved": 1 - fraction,
            "mean_regret_rel": done["regret_rel"].mean(), "max_regret_rel": done["regret_rel"].max(),
            "best_kept_rate": done["best_kept"].astype(float).mean() if len(done) else math.nan}
