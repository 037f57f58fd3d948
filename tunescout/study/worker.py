"""What runs inside a trial's process: one ``train()`` call that reports to the driver.

The module imports torch, transformers, peft and the training code at the top on purpose:
executors preload it into the process that trials are forked from, so a trial starts in
milliseconds instead of paying several seconds of imports (a study has hundreds of short trials).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import peft  # noqa: F401  (LoRA trials need it: ~3 s each to import after the fork)
import torch  # noqa: F401  (preloaded on purpose, see above)
import transformers  # noqa: F401

from tunescout.config import ConfigError, build_config
from tunescout.data.formats import DataError, read_examples
from tunescout.study.keys import DEFAULT_METRIC, dataset_harness, dataset_metric
from tunescout.study.messages import TrialPayload, TrialSummary, Verdict
from tunescout.train.loop import train
from tunescout.train.rundir import RunDirLocked, StorageNotShared, check_storage, hold_lock
from tunescout.train.telemetry import StepRecord

__all__ = ["Channel", "Verdict", "asks_at", "run_trial", "task_evaluator"]

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

CERTAIN_FAILURES = (ConfigError, DataError, StorageNotShared)
"""Failures that another attempt would meet again (a refused config or resume, malformed data, a
node without the shared folder): the driver does not retry them."""


def task_evaluator(task: dict[str, Any]):
    """The dataset's task metric on the trained model: by generation on its eval file, or its
    lm-evaluation-harness tasks on the model in memory (nothing for ``val_loss``)."""
    name = dataset_metric(task)
    if name == DEFAULT_METRIC:
        return None
    harness = dataset_harness(task)

    def evaluate(model, tokenizer) -> dict[str, Any]:
        if harness is not None:
            from tunescout.evaluate.harness import harness_score, run_harness

            limit = harness.limit if harness.limit is not None else task.get("eval_limit")
            doc = run_harness(model, tokenizer, harness.tasks, num_fewshot=harness.num_fewshot, limit=limit,
                              include_path=harness.include_path, batch_size=harness.batch_size)
            return {name: harness_score(doc, harness)}
        from tunescout.evaluate import evaluate_task

        examples = read_examples(task["eval"])
        device = next(model.parameters()).device
        out = evaluate_task(model, tokenizer, examples, name, max_new_tokens=task["max_new_tokens"],
                            device=device, limit=task["eval_limit"])
        return {name: out["score"]}

    return evaluate


def _quiet_libraries() -> None:
    """Library progress bars and deprecation chatter from many trials would bury the sweep's log."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)


def _die_with_driver(driver_pid: int | None) -> None:
    """End this process as soon as the sweep driver is gone, wherever training is.

    A trial outliving its driver would keep a GPU busy and race the next sweep's retry of the
    same trial. On Linux the kernel sends SIGKILL when our parent dies (the executor's fork
    server, which exits when the driver does); everywhere, a watcher thread checks the driver
    every half second, which also covers a parent that is not the driver. Checkpoints are
    written atomically, so dying at any moment loses at most the steps since the last one.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)
    if driver_pid is None:
        return

    def watch() -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(driver_pid, 0)
            except ProcessLookupError:
                os.kill(os.getpid(), signal.SIGKILL)
            except PermissionError:
                pass  # alive, owned by someone else (cannot happen for our own driver)

    threading.Thread(target=watch, name="driver-watch", daemon=True).start()


class Channel(Protocol):
    """How a trial talks to its sweep driver, whatever carries the messages (a pipe to a local
    driver, a Ray actor to a driver on another machine).

    Messages from one trial arrive in the order they were sent. ``send`` does not wait; ``ask``
    waits for the driver's verdict on the record it carries, and is used only at the records a
    rule judges, so a trial never waits on the driver (or the network) at every step. ``done``
    is the last message and returns once it is delivered.
    """

    def send(self, record: dict[str, Any]) -> None:
        """A step record, stored by the driver."""

    def ask(self, record: dict[str, Any]) -> Verdict:
        """Send a step record and return the verdict on it: None, a stop reason, or a Pause."""

    def done(self, summary: TrialSummary) -> None:
        """The trial's end."""


def asks_at(points: Sequence[Sequence[int]]) -> Callable[[StepRecord], bool]:
    """Whether a record is one a rule judges: the first to reach each ``(samples, min_steps)``
    point (past ``samples`` and at least the ``min_steps``-th step), each point once."""
    remaining = sorted((int(s), int(m)) for s, m in points)

    def due(record: StepRecord) -> bool:
        hit = [p for p in remaining if record.samples >= p[0] and record.step >= p[1]]
        for p in hit:
            remaining.remove(p)
        return bool(hit)

    return due


def _wait_for_run_dir(run_dir: str, timeout: float = 60.0) -> None:
    """Wait (up to ``timeout``) while another process holds the trial's run directory.

    Within a study the only other holder can be a lost attempt of this same trial whose process
    is still being killed (a cancelled Ray task, a killed driver's trial): give it time to die
    rather than fail the retry that replaces it. Training takes the lock for itself afterwards.
    """
    lock = Path(run_dir) / ".lock"
    deadline = time.monotonic() + timeout
    while lock.exists():
        try:
            with hold_lock(lock, "{pid}"):
                return
        except RunDirLocked:
            if time.monotonic() >= deadline:
                return  # training raises RunDirLocked with the holder's pid
            time.sleep(0.2)


def run_trial(channel: Channel, payload: TrialPayload) -> None:
    """Train one trial, streaming each step record to the driver, asking for a verdict at the
    records listed in ``payload.ask_at``, and ending with one ``done`` message.

    A channel that fails (the driver is gone) raises inside the early-stop hook, which ends
    the run as failed; the next sweep resumes it from its checkpoint.
    """
    if payload.driver_pid is not None:
        _die_with_driver(payload.driver_pid)
    _quiet_libraries()
    if payload.cuda_device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(payload.cuda_device)
    if payload.threads:
        torch.set_num_threads(int(payload.threads))
    due = asks_at(payload.ask_at)
    every = int(payload.config.get("checkpoint_every") or 0)
    last = payload.planned_samples

    def early_stop(record: StepRecord) -> Verdict:
        # Ask where the rule judges, and also where a checkpoint follows (every checkpoint_every
        # steps, and the last step): the answer means the driver has stored every record so far,
        # so no checkpoint ever gets ahead of the store, whenever the driver dies.
        if due(record) or (every and record.step % every == 0) or (last is not None and record.samples >= last):
            return channel.ask(asdict(record))
        channel.send(asdict(record))
        return None

    try:
        if payload.storage_check:
            check_storage(*payload.storage_check)
        config = build_config(payload.config)
        _wait_for_run_dir(config.output.output_dir)
        if payload.ranks > 1:  # FSDP2 on `ranks` processes under torchrun; rank 0's records come to early_stop here
            from tunescout.train.distributed import TaskEvalSpec, spawn_trial

            evaluator = TaskEvalSpec(f"{__name__}:task_evaluator", {"task": payload.task})
            result = spawn_trial(config, payload.ranks, early_stop=early_stop, task_eval=evaluator, resume=True,
                                 data_cache=payload.data_cache)
        else:
            result = train(config, resume=True, early_stop=early_stop, task_eval=task_evaluator(payload.task),
                           data_cache=payload.data_cache)
        summary = TrialSummary(status=result.status, reason=result.reason, steps=result.steps,
                               samples=result.samples, tokens=result.tokens, wall_s=result.wall_s,
                               eval_loss=result.eval_loss, metrics=dict(result.metrics or {}))
    except BaseException as exc:  # noqa: BLE001 - every failure is reported, none kills the sweep
        summary = TrialSummary(status="failed", reason=f"{type(exc).__name__}: {exc}",
                               traceback=traceback.format_exc(limit=8),
                               retryable=not isinstance(exc, CERTAIN_FAILURES))
    try:
        channel.done(summary)
    except (BrokenPipeError, OSError):
        pass  # the driver is gone; the next sweep finds the trial running and resumes it
