"""What runs inside a trial's process: one ``train()`` call that reports to the driver.

The module imports torch, transformers and the training code at the top on purpose: executors
preload it into the process that trials are forked from, so a trial starts in milliseconds
instead of paying several seconds of imports (a study has hundreds of short trials).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import asdict
from multiprocessing.connection import Connection
from typing import Any

import torch  # noqa: F401  (preloaded on purpose, see above)
import transformers  # noqa: F401

from tunescout.config import build_config
from tunescout.data.formats import read_examples
from tunescout.study.keys import DEFAULT_METRIC, dataset_metric
from tunescout.train.loop import train
from tunescout.train.telemetry import Pause

__all__ = ["run_trial"]

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _task_eval(task: dict[str, Any]):
    """The dataset's task metric by generation on its eval file (nothing for ``val_loss``)."""
    if dataset_metric(task) == DEFAULT_METRIC:
        return None

    def evaluate(model, tokenizer) -> dict[str, Any]:
        from tunescout.evaluate import evaluate_task

        examples = read_examples(task["eval"])
        device = next(model.parameters()).device
        out = evaluate_task(model, tokenizer, examples, task["metric"], max_new_tokens=task["max_new_tokens"],
                            device=device, limit=task["eval_limit"])
        return {task["metric"]: out["score"]}

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


def run_trial(conn: Connection, payload: dict[str, Any]) -> None:
    """Train one trial; send ``("record", dict)`` per step (and wait for a verdict), then ``("done", dict)``.

    The driver's verdict is None to continue or a reason to stop. A broken pipe (driver killed)
    raises inside the early-stop hook, which ends the run as failed; the next sweep resumes it
    from its checkpoint.
    """
    _die_with_driver(payload.get("driver_pid"))
    _quiet_libraries()
    if payload.get("cuda_device") is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(payload["cuda_device"])
    if payload.get("threads"):
        torch.set_num_threads(int(payload["threads"]))

    def early_stop(record) -> str | Pause | None:
        conn.send(("record", asdict(record)))
        return conn.recv()

    try:
        config = build_config(payload["config"])
        result = train(config, resume=True, early_stop=early_stop, task_eval=_task_eval(payload.get("task", {})))
        summary = {k: getattr(result, k) for k in ("status", "reason", "steps", "samples", "tokens", "wall_s",
                                                    "eval_loss", "metrics")}
    except BaseException as exc:  # noqa: BLE001 - every failure is reported, none kills the sweep
        summary = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc(limit=8)}
    try:
        conn.send(("done", summary))
    except (BrokenPipeError, OSError):
        pass
    finally:
        conn.close()
