"""The sweep driver: plan trials, launch them on an executor, apply the stopping rule, record all.

The driver is the only writer of the store. Everything it needs to continue is in the store and
the trials' run directories, so killing it and running the same command again finishes the
study: finished trials are kept, trials it had running resume from their last checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from tunescout.study.executors import Executor, build_executor
from tunescout.study.keys import COHORT, DEFAULT_METRIC, dataset_harness, dataset_metric
from tunescout.study.promotion import at_rung, decide_ready, expected_fraction, fair_order, promotes
from tunescout.study.spec import DatasetSpec, StudySpec, expand_trials, trial_config
from tunescout.study.stopping import StoppingRule, TrialProgress, build_rule
from tunescout.study.store import FINISHED, StudyStore, open_store
from tunescout.train.rundir import hold_lock, mark_storage
from tunescout.train.telemetry import Pause

__all__ = ["plan_study", "run_sweep"]

log = logging.getLogger("tunescout.study")


def plan_study(spec: StudySpec) -> list[dict[str, Any]]:
    """Each trial with its config and planned compute (samples and tokens if run to the end).

    Data are tokenised once per (model, dataset, data settings) with the trial's own tokenizer,
    and the trial's schedule is built exactly as training will build it.
    """
    from tunescout.data.phases import build_schedule
    from tunescout.data.prepare import prepare_data
    from tunescout.train.models import load_tokenizer

    tokenizers: dict[str, Any] = {}
    prepared: dict[tuple, Any] = {}
    rows = []
    for dataset in spec.datasets:
        check_eval_file(dataset)
    for trial in expand_trials(spec):
        config = trial_config(spec, trial)
        key = (config.tokenizer or config.model, tuple(d.path for d in config.data), config.max_length,
               config.train_on, config.too_long, config.eval_fraction, config.chat_template, config.seed,
               config.strategy, config.epochs)
        if key not in prepared:
            name = config.tokenizer or config.model
            tokenizers.setdefault(name, load_tokenizer(name, trust_remote_code=config.trust_remote_code))
            prepared[key] = prepare_data(
                config.data, tokenizers[name], max_length=config.max_length, train_on=config.train_on,
                too_long=config.too_long, strategy=config.strategy, epochs=config.epochs,
                eval_fraction=config.eval_fraction, chat_template=config.chat_template, seed=config.seed)
        data = prepared[key]
        schedule = build_schedule(data.phases, config.batch_size, config.seed, config.max_samples, config.max_steps)
        rows.append({**dataclasses.asdict(trial), "config": config.to_dict(), "run_dir": config.output_dir,
                     "planned_samples": sum(len(b.indices) for b in schedule),
                     "planned_tokens": sum(len(data.train[i]) for b in schedule for i in b.indices),
                     "steps": len(schedule)})
    return rows


def check_eval_file(dataset: DatasetSpec) -> None:
    """Read a dataset's eval file as the task metric will, after training: every row it scores
    must be a question with a reference answer. A bad file otherwise surfaces only once every
    trial has trained.

    Raises:
        DataError: the file is missing or malformed, or a scored row has no prompt and answer.
    """
    from tunescout.data.formats import read_examples
    from tunescout.evaluate.tasks import build_eval_items

    examples = read_examples(dataset.eval)
    if dataset_metric(dataset) != DEFAULT_METRIC and dataset_harness(dataset) is None:
        build_eval_items(examples[: dataset.eval_limit], use_chat=True)


def format_plan(rows: list[dict[str, Any]], rule: StoppingRule | None = None) -> str:
    """The dry-run table: one line per trial and the planned compute (and, for a rule in
    ``promote`` mode, the compute successive halving is expected to train)."""
    keys = sorted({k for r in rows for k in r["hparams"]})
    head = ["trial_id", "model", "method", "dataset", *keys, "seed", "steps", "samples", "tokens"]
    table = [[r["trial_id"], r["model"].rsplit("/", 1)[-1], r["method"], r["dataset"],
              *(str(r["hparams"].get(k, "-")) for k in keys), str(r["seed"]), str(r["steps"]),
              str(r["planned_samples"]), str(r["planned_tokens"])] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in table]
    total = sum(r["planned_tokens"] for r in rows)
    lines.append(f"{len(rows)} trials, {total:,} tokens planned if every trial runs to the end")
    if rule is not None and promotes(rule):
        cohorts: dict[tuple, list[int]] = {}
        for r in rows:
            cohorts.setdefault(tuple(r[k] for k in COHORT), []).append(r["planned_tokens"])
        expected = sum(sum(t) * expected_fraction(len(t), rule.rungs, rule.eta) for t in cohorts.values())
        lines.append(f"promote mode (rungs {list(rule.rungs)}, eta {rule.eta:g}): about {expected:,.0f} tokens expected, "
                     f"{expected / max(total, 1):.0%} of the grid (every trial to the first rung, the best "
                     f"ceil(n/eta) of each cohort on from each rung)")
    return "\n".join(lines)


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


PROGRESS_EVERY_S = 30.0
"""How often a running sweep says where it stands: trials take minutes between events."""


def progress_line(counts: dict[str, int], tokens: int, planned_tokens: int, elapsed_s: float) -> str:
    """One line of a sweep's progress: trials by state, tokens trained, study time."""
    done = sum(counts.get(s, 0) for s in FINISHED)
    total = sum(counts.values())
    minutes, seconds = divmod(round(elapsed_s), 60)
    return (f"progress: {done}/{total} trials done ({counts.get('completed', 0)} completed, "
            f"{counts.get('stopped', 0)} stopped, {counts.get('diverged', 0) + counts.get('failed', 0)} diverged or "
            f"failed), {counts.get('running', 0)} running, {counts.get('paused', 0)} paused, "
            f"{counts.get('pending', 0)} pending; {tokens:,} tokens trained ({tokens / max(planned_tokens, 1):.0%} "
            f"of the grid); {minutes}m{seconds:02d}s")


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


def run_sweep(
    spec: StudySpec,
    executor: Executor | None = None,
    workers: int | None = None,
    on_event: Callable[[str], None] | None = None,
    retry_failed: bool = False,
) -> dict[str, int]:
    """Run (or finish) a study and return the trial counts by status.

    The executor is ``executor`` if given, else the study's ``executor`` settings (``workers``
    overrides their number of slots). The local executor forks trials from a server process,
    so a script that calls this must guard its top level with ``if __name__ == "__main__":``
    (as with any multiprocessing code that does not fork the caller itself); the CLI does.
    ``retry_failed`` launches the trials recorded ``failed`` again (from their checkpoints), for
    when their cause (a full disk, a bad file) has been fixed.
    """
    rows = plan_study(spec)
    rule = build_rule(spec.stopping)  # a bad rule fails before the store is touched
    options = {**spec.executor, **({"workers": workers} if workers else {})}
    with _driver_lock(spec.store):
        store = open_store(spec.store)
        try:
            return _drive(spec, store, rows, rule, executor or build_executor(options),
                          int(options.get("max_retries", 1)), on_event or (lambda msg: log.info("%s", msg)),
                          retry_failed)
        finally:
            store.close()


def _driver_lock(store_path: str) -> contextlib.AbstractContextManager[None]:
    """The store's single-writer lock (``<store>.lock``): a second driver of the same store would
    requeue the first one's running trials and launch them again."""
    if store_path == ":memory:":
        return contextlib.nullcontext()
    Path(store_path).parent.mkdir(parents=True, exist_ok=True)
    return hold_lock(f"{store_path}.lock", f"study store {store_path} is in use: sweep driver process {{pid}} "
                                           "is running it (wait for it, or stop it first)")


def _drive(spec: StudySpec, store: StudyStore, rows: list[dict[str, Any]], rule: StoppingRule, executor: Executor,
           max_retries: int, say: Callable[[str], None], retry_failed: bool = False) -> dict[str, int]:
    """The driver loop of :func:`run_sweep` on an open store; shuts the executor down on the way out.

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
    planned = {r["trial_id"]: r for r in rows}
    say(f"study {spec.name} (spec version {sync.version}): {len(rows)} trials: {sync.new} new, {sync.kept} kept, "
        f"{sync.newly_superseded} newly superseded ({sync.superseded} of earlier spec versions in all); "
        f"{len(requeued)} to resume" + (f", {len(reopened)} stopped trials reopened (the stopping rule changed)"
                                        if reopened else "")
        + (f", {len(retried)} failed trials retried" if retried else "")
        + (f", {failed_kept} failed trials kept as failed (--retry-failed runs them again)" if failed_kept else "")
        + f"; store {spec.store}")
    cohorts: dict[tuple, list[str]] = {}
    for r in rows:
        cohorts.setdefault(tuple(r[k] for k in COHORT), []).append(r["trial_id"])
    cohort_of = {tid: key for key, ids in cohorts.items() for tid in ids}
    task_of = {d.name: dataclasses.asdict(d) for d in spec.datasets}
    metric_of = {d.name: dataset_metric(d) for d in spec.datasets}
    progress = _progress_from_store(store, spec.name, metric_of)
    promote = promotes(rule)
    decided: dict[str, int] = {}
    for d in store.decisions(spec.name):
        decided[d["trial_id"]] = max(decided.get(d["trial_id"], 0), d["rung"])

    def decide(key: tuple) -> list[str]:
        """Rank a cohort at every rung it is ready for (recorded with its status changes in one
        transaction each); returns the trials to launch again."""
        resumed: list[str] = []
        members = [progress[t] for t in cohorts[key]]
        while (decision := decide_ready(rule, members, decided)) is not None:
            store.decide_rung(decision.rung, decision.rows, decision.resume)
            for row in decision.rows:
                tid = row["trial_id"]
                decided[tid] = decision.rung
                if row["reason"] is not None:
                    progress[tid].status = "stopped"
                    say(f"stopped {tid} {row['reason']}")
                elif tid in decision.resume:
                    progress[tid].status = "pending"
                    resumed.append(tid)
            kept = sum(r["reason"] is None for r in decision.rows)
            say(f"promote {'/'.join(str(k).rsplit('/', 1)[-1] for k in key)} rung {decision.rung}: "
                f"{kept} of {len(decision.rows)} continue")
        return resumed

    pending = fair_order([t["trial_id"] for t in store.trials(spec.name, status="pending")], cohort_of, spec.name)
    if promote:  # a driver killed after the last trial of a cohort paused, before it ranked them
        for key in cohorts:
            pending = decide(key) + pending
    storage = mark_storage(spec.runs_dir, spec.name)
    retries: dict[str, int] = {}
    started = saved_at = said_at = time.monotonic()
    study_row = store.study(spec.name) or {}
    previous = float(study_row.get("elapsed_s") or 0.0)
    halted = None
    try:
        while pending or executor.running():
            elapsed = previous + time.monotonic() - started
            if halted is None and pending and (halted := _budget_left(spec, store, elapsed)):
                say(f"{halted}: not launching the {len(pending)} remaining trials")
            if halted:  # also the trials a promotion decision would resume: nothing starts past the budget
                pending = []
            while pending and len(executor.running()) < executor.slots:
                tid = pending.pop(0)
                row = planned[tid]
                config = dict(row["config"])
                config["eval_at_samples"] = sorted({*config.get("eval_at_samples", []),
                                                    *rule.eval_points(row["planned_samples"])})
                attempt = store.mark_running(tid)
                progress[tid].status = "running"
                executor.submit(tid, {"config": config, "task": task_of[row["dataset"]], "attempt": attempt,
                                      "ask_at": rule.ask_points(row["planned_samples"]),
                                      "planned_samples": row["planned_samples"], "storage_check": storage})
                say(f"start {tid} {row['method']} {row['dataset']} {row['hparams']}"
                    + (f" (attempt {attempt}, resuming)" if attempt > 1 else ""))
            if time.monotonic() - said_at >= PROGRESS_EVERY_S:
                said_at = time.monotonic()
                say(progress_line(store.counts(spec.name), store.tokens_trained(spec.name),
                                  sum(r["planned_tokens"] for r in rows), previous + said_at - started))
            event = executor.next_event(timeout=1.0)
            if event is None:
                continue
            tid, tp = event.trial_id, progress[event.trial_id]
            if event.kind in ("record", "ask"):
                rec = event.data
                store.add_telemetry(tid, rec)
                # A resumed trial repeats the steps after its checkpoint: replace them.
                tp.telemetry = [r for r in tp.telemetry if r["step"] < rec["step"]] + [rec]
                tp.evals = [e for e in tp.evals if e["samples"] < rec["samples"]]
                if rec.get("val_loss") is not None or rec.get("metrics"):
                    metric = (rec.get("metrics") or {}).get(metric_of[planned[tid]["dataset"]])
                    tp.evals.append({"samples": rec["samples"], "val_loss": rec.get("val_loss"), "metric": metric})
                if event.kind == "ask" and promote:
                    reached = at_rung(rule, tp.telemetry, tp.planned_samples, decided.get(tid, 0))
                    executor.reply(tid, Pause(f"rung {decided.get(tid, 0) + 1}") if reached else None)
                elif event.kind == "ask":
                    executor.reply(tid, rule.decide(tp, [progress[t] for t in cohorts[cohort_of[tid]]]))
                continue
            data = event.data
            totals = {k: data.get(k) for k in ("steps", "samples", "tokens", "wall_s")}
            status = data.get("status", "failed")
            if status == "paused":
                store.pause(tid, f"waiting at {data.get('reason', 'a rung')} for its cohort", totals)
                tp.status = "paused"
                say(f"paused {tid} at {data.get('reason', '')}")
            elif status not in ("completed", "stopped", "diverged") and data.get("retryable", True) \
                    and retries.get(tid, 0) < max_retries:
                retries[tid] = retries.get(tid, 0) + 1
                store.retry(tid, data.get("reason", ""))
                tp.status = "pending"
                pending.insert(0, tid)
                say(f"retrying {tid} ({retries[tid]} of {max_retries}) from its checkpoint after: "
                    f"{data.get('reason', 'failure')}")
            else:
                status = status if status in FINISHED else "failed"
                metrics = dict(data.get("metrics") or {})
                if data.get("eval_loss") is not None:
                    metrics["val_loss"] = data["eval_loss"]
                store.finish(tid, status, data.get("reason", ""), metrics, totals)
                tp.status = status
                say(f"{status} {tid} {data.get('reason', '')} {metrics}".rstrip())
            if promote:  # a pause or an end may complete the cohort at its rung
                pending = decide(cohort_of[tid]) + pending
            now = time.monotonic()  # persist study time as we go: a killed driver keeps it
            store.add_elapsed(spec.name, now - saved_at)
            saved_at = now
    finally:
        executor.shutdown()
        store.add_elapsed(spec.name, time.monotonic() - saved_at)
    waiting = sum(p.status == "paused" for p in progress.values())
    if promote and waiting:
        say(f"{waiting} trials wait paused at a rung{' (the budget stopped their cohorts)' if halted else ''}; "
            "rerun the sweep (with a larger budget) to go on")
    return store.counts(spec.name)


