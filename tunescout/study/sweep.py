"""A sweep: plan a study's trials, then drive them on an executor (:mod:`tunescout.study.driver`).

The driver is the only writer of the store. Everything it needs to continue is in the store and
the trials' run directories, so killing it and running the same command again finishes the
study: finished trials are kept, trials it had running resume from their last checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from functools import partial
from pathlib import Path
from typing import Any, Callable

from tunescout.study.driver import drive
from tunescout.study.executors import Executor, build_executor, validate_executor
from tunescout.study.keys import COHORT, DEFAULT_METRIC, dataset_harness, dataset_metric
from tunescout.stopping.policies import Stopping
from tunescout.study.spec import DatasetSpec, StudySpec, expand_trials, trial_config
from tunescout.study.store import open_store
from tunescout.train.rundir import hold_lock

__all__ = ["plan_study", "run_sweep"]

log = logging.getLogger("tunescout.study")


def plan_study(spec: StudySpec) -> list[dict[str, Any]]:
    """Each trial with its config and planned compute (samples and tokens if run to the end).

    Data are tokenised once per (model, dataset, data settings) with the trial's own tokenizer,
    and the trial's schedule is built exactly as training will build it.
    """
    return _plan(spec, None)[0]


Fresh = list[tuple[Any, str, Any]]
"""Data the plan tokenised that the cache lacked: ``(config, tokenizer fingerprint, prepared)``."""


def _plan(spec: StudySpec, data_cache: Path | None) -> tuple[list[dict[str, Any]], Fresh]:
    """:func:`plan_study`, reading the data from ``data_cache`` where an earlier sweep kept them;
    also returns what it tokenised, for the driver to keep there once the store has been read (a
    store that cannot be read leaves every file as it was)."""
    from tunescout.data.cache import read_prepared, tokenizer_fingerprint
    from tunescout.data.phases import build_schedule
    from tunescout.data.prepare import data_key, prepare_for
    from tunescout.train.models import load_tokenizer

    tokenizers: dict[str, Any] = {}
    prepared: dict[tuple, Any] = {}
    rows, fresh = [], []
    for dataset in spec.datasets:
        check_eval_file(dataset)
    for trial in expand_trials(spec):
        config = trial_config(spec, trial)
        key = data_key(config)
        if key not in prepared:
            name = config.tokenizer or config.model
            if name not in tokenizers:  # fingerprinted as loaded, as a trial will load it
                tokenizer = load_tokenizer(name, trust_remote_code=config.trust_remote_code)
                tokenizers[name] = tokenizer, tokenizer_fingerprint(tokenizer)
            tokenizer, fingerprint = tokenizers[name]
            template = tokenizer.chat_template  # preparing may install one: each key starts as a trial would
            cached = read_prepared(config, tokenizer, fingerprint, data_cache) if data_cache else None
            prepared[key] = cached or prepare_for(config, tokenizer)
            tokenizer.chat_template = template
            if cached is None:
                fresh.append((config, fingerprint, prepared[key]))
        data = prepared[key]
        b = config.batch
        schedule = build_schedule(data.phases, b.batch_size, config.seed, b.max_samples, b.max_steps)
        rows.append({**dataclasses.asdict(trial), "config": config.to_dict(), "run_dir": config.output.output_dir,
                     "planned_samples": sum(len(b.indices) for b in schedule),
                     "planned_tokens": sum(len(data.train[i]) for b in schedule for i in b.indices),
                     "steps": len(schedule)})
    return rows, fresh


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


def format_plan(rows: list[dict[str, Any]], stopping: Stopping | None = None) -> str:
    """The dry-run table: one line per trial and the planned compute (and, in ``promote`` mode,
    the compute successive halving is expected to train)."""
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
    if stopping is not None and stopping.promotes:
        rule = stopping.rule
        cohorts: dict[tuple, list[int]] = {}
        for r in rows:
            cohorts.setdefault(tuple(r[k] for k in COHORT), []).append(r["planned_tokens"])
        expected = sum(sum(t) * (stopping.policy.share(len(t), rule) or 1.0) for t in cohorts.values())
        lines.append(f"promote mode (rungs {list(rule.rungs)}, eta {rule.eta:g}): "
                     f"about {expected:,.0f} tokens expected, "
                     f"{expected / max(total, 1):.0%} of the grid (every trial to the first rung, the best "
                     f"ceil(n/eta) of each cohort on from each rung)")
    return "\n".join(lines)


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
    rows, fresh = _plan(spec, spec.data_cache)
    stopping = spec.early_stopping  # built when the study loaded: a bad rule never reaches the store
    options = validate_executor(spec.executor)  # typed once at load; a no-op check then
    if workers:
        options = dataclasses.replace(options, workers=workers)
    with _driver_lock(spec.store):
        store = open_store(spec.store)
        try:
            return drive(spec, store, rows, stopping, executor or build_executor(options), options.max_retries,
                         on_event or (lambda msg: log.info("%s", msg)), retry_failed,
                         keep_data=partial(_keep, fresh, spec.data_cache))
        finally:
            store.close()


def _keep(fresh: Fresh, data_cache: Path | None) -> None:
    from tunescout.data.cache import keep_prepared

    if data_cache is not None:
        for config, fingerprint, data in fresh:
            keep_prepared(config, fingerprint, data, data_cache)


def _driver_lock(store_path: str) -> contextlib.AbstractContextManager[None]:
    """The store's single-writer lock (``<store>.lock``): a second driver of the same store would
    requeue the first one's running trials and launch them again."""
    if store_path == ":memory:":
        return contextlib.nullcontext()
    Path(store_path).parent.mkdir(parents=True, exist_ok=True)
    return hold_lock(f"{store_path}.lock", f"study store {store_path} is in use: sweep driver process {{pid}} "
                                           "is running it (wait for it, or stop it first)")
