"""The sweep driver's steps over one :class:`DriverState`: launch, on_record, on_done, decide.

Each step is a plain function of the state, the store and (for launch) the executor, so each
can be tested alone with an in-memory store; :func:`drive` is the loop that calls them. The
driver is the store's only writer: every step records what it changed before the loop goes on,
so a killed driver leaves a store that the next one continues from.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunescout.study.executors import Executor
from tunescout.study.keys import COHORT, dataset_metric
from tunescout.study.messages import TrialEvent, TrialPayload, Verdict
from tunescout.stopping.policies import Stopping
from tunescout.stopping.promotion import fair_order
from tunescout.study.spec import StudySpec
from tunescout.stopping.rules import TrialProgress
from tunescout.study.store import FINISHED, StudyStore
from tunescout.train.rundir import mark_storage

__all__ = ["PROGRESS_EVERY_S", "DriverState", "decide", "drive", "launch", "on_done", "on_record", "progress_line",
           "start_state"]

PROGRESS_EVERY_S = 30.0
"""How often a running sweep says where it stands: trials take minutes between events."""

Say = Callable[[str], None]


@dataclass
class DriverState:
    """What the driver knows between events, rebuilt from the store and the plan at start."""

    stopping: Stopping
    payloads: dict[str, TrialPayload]
    """Each planned trial's payload (config resolved, the rule's eval points merged), made once."""
    labels: dict[str, str]
    """Each trial's ``method dataset {hparams}`` for the log."""
    cohort_of: dict[str, tuple]
    cohorts: dict[tuple, list[str]]
    metric_of: dict[str, str]
    """Each trial's task metric name (the score its evals carry)."""
    progress: dict[str, TrialProgress]
    decided: dict[str, int] = field(default_factory=dict)
    """The rungs decided so far for each trial (promote)."""
    pending: list[str] = field(default_factory=list)
    """Trials to launch, in order."""
    retries: dict[str, int] = field(default_factory=dict)
    """Launches again after a failure, per trial, in this sweep (a rerun of the sweep starts at 0)."""
    max_retries: int = 1

    def cohort(self, trial_id: str) -> list[TrialProgress]:
        """The progress of every trial the trial is compared with, itself included."""
        return [self.progress[t] for t in self.cohorts[self.cohort_of[trial_id]]]


def start_state(spec: StudySpec, store: StudyStore, rows: list[dict[str, Any]], stopping: Stopping,
                max_retries: int = 1,
                storage_check: Callable[[], tuple[str, str] | None] = lambda: None) -> DriverState:
    """The state of a driver over a synced store: progress rebuilt from its records, each
    trial's payload, pending trials in a fair order.

    ``storage_check`` marks the study's storage (and returns what trials check) only once the
    store has been read: a store that cannot be read leaves every file as it was.
    """
    metric_by_dataset = {d.name: dataset_metric(d) for d in spec.datasets}
    progress = _progress_from_store(store, spec.name, metric_by_dataset)
    marker = storage_check()
    task_of = {d.name: dataclasses.asdict(d) for d in spec.datasets}
    rule = stopping.rule
    payloads, labels, cohorts = {}, {}, {}
    for r in rows:
        config = dict(r["config"])
        config["eval_at_samples"] = sorted({*config.get("eval_at_samples", []),
                                            *rule.eval_points(r["planned_samples"])})
        tid = r["trial_id"]
        payloads[tid] = TrialPayload(tid, config, task_of[r["dataset"]],
                                     ask_at=tuple(tuple(p) for p in rule.ask_points(r["planned_samples"])),
                                     planned_samples=r["planned_samples"], storage_check=marker,
                                     data_cache=str(spec.data_cache) if spec.data_cache else None)
        labels[tid] = f"{r['method']} {r['dataset']} {r['hparams']}"
        cohorts.setdefault(tuple(r[k] for k in COHORT), []).append(tid)
    cohort_of = {tid: key for key, ids in cohorts.items() for tid in ids}
    metric_of = {r["trial_id"]: metric_by_dataset[r["dataset"]] for r in rows}
    state = DriverState(stopping, payloads, labels, cohort_of, cohorts, metric_of, progress,
                        max_retries=max_retries)
    for d in store.decisions(spec.name):
        state.decided[d["trial_id"]] = max(state.decided.get(d["trial_id"], 0), d["rung"])
    state.pending = fair_order([t["trial_id"] for t in store.trials(spec.name, status="pending")], cohort_of, spec.name)
    return state


def _progress_from_store(store: StudyStore, study: str, metric_of: dict[str, str]) -> dict[str, TrialProgress]:
    """Rebuild every current trial's progress (what the stopping rule sees) from the store."""
    trials = store.trials(study)
    progress = {t["trial_id"]: TrialProgress(t["trial_id"], t["planned_samples"] or 1, [], [], t["status"])
                for t in trials}
    dataset_of = {t["trial_id"]: t["dataset"] for t in trials}
    values = {(r["trial_id"], r["samples"], r["name"]): r["value"] for r in store.results(study=study)}
    for rec in store.telemetry(study=study):
        tid = rec["trial_id"]
        progress[tid].telemetry.append(rec)
        if rec.get("val_loss") is not None:
            metric = values.get((tid, rec["samples"], metric_of.get(dataset_of[tid], "")))
            progress[tid].evals.append({"samples": rec["samples"], "val_loss": rec["val_loss"], "metric": metric})
    return progress


def launch(state: DriverState, store: StudyStore, executor: Executor, say: Say) -> None:
    """Start pending trials while the executor has free slots."""
    while state.pending and len(executor.running()) < executor.slots:
        tid = state.pending.pop(0)
        attempt = store.mark_running(tid)
        state.progress[tid].status = "running"
        executor.submit(dataclasses.replace(state.payloads[tid], attempt=attempt))
        say(f"start {tid} {state.labels[tid]}" + (f" (attempt {attempt}, resuming)" if attempt > 1 else ""))


def on_record(state: DriverState, store: StudyStore, event: TrialEvent) -> Verdict:
    """Store a step record and add it to the trial's progress; for an ``ask``, the verdict."""
    tid, rec = event.trial_id, event.record
    assert rec is not None
    tp = state.progress[tid]
    store.add_telemetry(tid, rec)
    # A resumed trial repeats the steps after its checkpoint: replace them.
    tp.telemetry = [r for r in tp.telemetry if r["step"] < rec["step"]] + [rec]
    tp.evals = [e for e in tp.evals if e["samples"] < rec["samples"]]
    if rec.get("val_loss") is not None or rec.get("metrics"):
        metric = (rec.get("metrics") or {}).get(state.metric_of[tid])
        tp.evals.append({"samples": rec["samples"], "val_loss": rec.get("val_loss"), "metric": metric})
    if event.kind != "ask":
        return None
    return state.stopping.verdict(tp, state.cohort(tid), state.decided.get(tid, 0))


def on_done(state: DriverState, store: StudyStore, event: TrialEvent, say: Say) -> None:
    """Record a trial's end: paused at a rung, retried from its checkpoint, or finished; then
    (promote) rank its cohort if the end made it ready."""
    tid, summary = event.trial_id, event.summary
    assert summary is not None
    tp = state.progress[tid]
    if summary.status == "paused":
        store.pause(tid, f"waiting at {summary.reason or 'a rung'} for its cohort", summary.totals())
        tp.status = "paused"
        say(f"paused {tid} at {summary.reason}")
    elif summary.status not in ("completed", "stopped", "diverged") and summary.retryable \
            and state.retries.get(tid, 0) < state.max_retries:
        state.retries[tid] = state.retries.get(tid, 0) + 1
        store.retry(tid, summary.reason)
        tp.status = "pending"
        state.pending.insert(0, tid)
        say(f"retrying {tid} ({state.retries[tid]} of {state.max_retries}) from its checkpoint after: "
            f"{summary.reason or 'failure'}")
    else:
        status = summary.status if summary.status in FINISHED else "failed"
        scores = summary.scores()
        store.finish(tid, status, summary.reason, scores, summary.totals())
        tp.status = status
        say(f"{status} {tid} {summary.reason} {scores}".rstrip())
    state.pending = decide(state, store, state.cohort_of[tid], say) + state.pending


def decide(state: DriverState, store: StudyStore, key: tuple, say: Say) -> list[str]:
    """Rank a cohort at every rung it is ready for (each decision recorded with its status
    changes in one transaction); returns the trials to launch again. Nothing under ``async``."""
    resumed: list[str] = []
    members = [state.progress[t] for t in state.cohorts[key]]
    while (decision := state.stopping.ready(members, state.decided)) is not None:
        store.decide_rung(decision.rung, decision.rows, decision.resume)
        for row in decision.rows:
            tid = row["trial_id"]
            state.decided[tid] = decision.rung
            if row["reason"] is not None:
                state.progress[tid].status = "stopped"
                say(f"stopped {tid} {row['reason']}")
            elif tid in decision.resume:
                state.progress[tid].status = "pending"
                resumed.append(tid)
        kept = sum(r["reason"] is None for r in decision.rows)
        say(f"promote {'/'.join(str(k).rsplit('/', 1)[-1] for k in key)} rung {decision.rung}: "
            f"{kept} of {len(decision.rows)} continue")
    return resumed


def progress_line(counts: dict[str, int], tokens: int, planned_tokens: int, elapsed_s: float) -> str:
    """One line of a sweep's progress: trials by state, tokens trained, study time."""
    done = sum(counts.get(s, 0) for s in FINISHED)
    total = sum(counts.values())
    minutes, seconds = divmod(round(elapsed_s), 60)
    return (f"progress: {done}/{total} trials done ({counts.get('completed', 0)} completed, "
            f"{counts.get('stopped', 0)} stopped, {counts.get('diverged', 0) + counts.get('failed', 0)} diverged or "
            f"failed), {counts.get('running', 0)} running, {counts.get('paused', 0)} paused, "
            f"{counts.get('pending', 0)} pending; {tokens:,} tokens trained ({tokens / max(planned_tokens, 1):.0%} "
            f"of the study run to the end); {minutes}m{seconds:02d}s")


def _budget_left(spec: StudySpec, store: StudyStore, elapsed: float) -> str | None:
    """None while the budget allows launching, else why not (tokens count the current trials)."""
    tokens = spec.budget.get("tokens")
    trained = store.tokens_trained(spec.name) if tokens is not None else 0
    if tokens is not None and trained >= tokens:
        return f"token budget reached ({trained:,} >= {int(tokens):,})"
    wall = spec.budget.get("wall_s")
    if wall is not None and elapsed >= wall:
        return f"time budget reached ({elapsed:.0f}s >= {wall:.0f}s)"
    return None


def drive(spec: StudySpec, store: StudyStore, rows: list[dict[str, Any]], stopping: Stopping, executor: Executor,
          max_retries: int, say: Say, retry_failed: bool = False,
          keep_data: Callable[[], None] = lambda: None) -> dict[str, int]:
    """Sync the plan into the store and run the loop; shuts the executor down on the way out.

    ``keep_data`` writes the data the plan tokenised where the trials read them
    (:mod:`tunescout.data.cache`), once the store has been read.

    A failed trial (its process died, its node was lost, it raised) is launched again up to
    ``max_retries`` times in this sweep, resuming from its checkpoint, before it counts as failed;
    not a failure another attempt would meet again (the worker marks those ``retryable: False``).
    """
    spec_doc = json.loads(json.dumps(dataclasses.asdict(spec), default=str))
    before = store.study_spec(spec.name) if spec.name in store.studies() else None
    sync = store.sync_trials(spec.name, spec_doc, rows)
    # A trial stopped by a rule the study no longer has was judged by the wrong rule: reopen it.
    reopened = store.reopen_stopped(spec.name) if before and before.get("stopping") != spec_doc["stopping"] else []
    requeued = store.requeue_running(spec.name)
    retried = store.requeue_failed(spec.name) if retry_failed else []
    failed_kept = 0 if retry_failed else len(store.trials(spec.name, status="failed"))
    keep_data()
    say(f"study {spec.name} (spec version {sync.version}): {len(rows)} trials: {sync.new} new, {sync.kept} kept, "
        f"{sync.newly_superseded} newly superseded ({sync.superseded} of earlier spec versions in all); "
        f"{len(requeued)} to resume" + (f", {len(reopened)} stopped trials reopened (the stopping rule changed)"
                                        if reopened else "")
        + (f", {len(retried)} failed trials retried" if retried else "")
        + (f", {failed_kept} failed trials kept as failed (--retry-failed runs them again)" if failed_kept else "")
        + f"; store {spec.store}")
    state = start_state(spec, store, rows, stopping, max_retries, lambda: mark_storage(spec.runs_dir, spec.name))
    for key in state.cohorts:  # a driver killed after the last trial of a cohort paused, before it ranked them
        state.pending = decide(state, store, key, say) + state.pending
    planned_tokens = sum(r["planned_tokens"] for r in rows)
    started = saved_at = said_at = time.monotonic()
    previous = float((store.study(spec.name) or {}).get("elapsed_s") or 0.0)
    halted = None
    try:
        while state.pending or executor.running():
            elapsed = previous + time.monotonic() - started
            if halted is None and state.pending and (halted := _budget_left(spec, store, elapsed)):
                say(f"{halted}: not launching the {len(state.pending)} remaining trials")
            if halted:  # also the trials a promotion decision would resume: nothing starts past the budget
                state.pending = []
            launch(state, store, executor, say)
            if time.monotonic() - said_at >= PROGRESS_EVERY_S:
                said_at = time.monotonic()
                say(progress_line(store.counts(spec.name), store.tokens_trained(spec.name), planned_tokens,
                                  previous + said_at - started))
            event = executor.next_event(timeout=1.0)
            if event is None:
                continue
            if event.kind != "done":
                verdict = on_record(state, store, event)
                if event.kind == "ask":
                    executor.reply(event.trial_id, verdict)
                continue
            on_done(state, store, event, say)
            now = time.monotonic()  # persist study time as we go: a killed driver keeps it
            store.add_elapsed(spec.name, now - saved_at)
            saved_at = now
    finally:
        executor.shutdown()
        store.add_elapsed(spec.name, time.monotonic() - saved_at)
    waiting = sum(p.status == "paused" for p in state.progress.values())
    if stopping.promotes and waiting:
        say(f"{waiting} trials wait paused at a rung{' (the budget stopped their cohorts)' if halted else ''}; "
            "rerun the sweep (with a larger budget) to go on")
    return store.counts(spec.name)
