"""Start one run on several processes from an ordinary one, and stay its early-stop hook.

:func:`spawn_trial` is what a sweep worker calls instead of ``train()`` when a trial needs more
than one GPU. It writes the run's settings into a private temporary folder, starts
``python -m torch.distributed.run --standalone --nproc_per_node=N -m tunescout.train.distributed
SPEC`` and listens on a localhost socket (``multiprocessing.connection``, a fresh random
authkey) to which rank 0 connects. Rank 0 sends every step record; the caller's ``early_stop``
judges it, and its verdict goes back and is broadcast to all ranks. At the end rank 0 sends the
:class:`~tunescout.train.loop.RunResult`.

Callables do not cross processes, so ``task_eval`` is given as a :class:`TaskEvalSpec`: the
import path of a *factory* and JSON keyword arguments. Every rank imports the factory and calls
it to get its ``task_eval`` (or None); rank 0 runs it on an unsharded replica of the model.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tunescout.config import TrainConfig

if TYPE_CHECKING:
    from tunescout.train.loop import RunResult
    from tunescout.train.telemetry import EarlyStop

__all__ = ["TaskEvalSpec", "run_spawned_rank", "spawn_trial"]

log = logging.getLogger("tunescout.train.distributed")

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_POLL_S = 0.2


@dataclass(frozen=True)
class TaskEvalSpec:
    """A ``task_eval`` that can be rebuilt in another process: ``factory(**kwargs)``.

    ``factory`` is ``"package.module:function"``; the function takes ``kwargs`` (JSON values)
    and returns the ``task_eval`` callable ``(model, tokenizer) -> dict`` or None (no task
    metric). It must be importable by the spawned processes (installed, or on ``PYTHONPATH``).
    """

    factory: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        module, _, name = self.factory.partition(":")
        if not module or not name:
            raise ValueError(f"TaskEvalSpec.factory must be 'package.module:function', got {self.factory!r}")
        json.dumps(self.kwargs)  # a TypeError here, not in the spawned processes

    def build(self) -> Callable[[Any, Any], dict[str, Any]] | None:
        """Import the factory and call it."""
        module, _, name = self.factory.partition(":")
        return getattr(importlib.import_module(module), name)(**self.kwargs)


def _parent_death_signal() -> Callable[[], None]:
    """A function that has the kernel SIGKILL the calling process when its parent dies (Linux;
    elsewhere it does nothing).

    torchrun gets it (run between fork and exec, so libc is looked up beforehand: nothing is
    imported in the child), and so does every rank, whose parent is torchrun: whoever kills
    the caller kills the whole tree, and no rank is left waiting in a collective on a GPU.
    """
    if not sys.platform.startswith("linux"):
        return lambda: None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return lambda: None
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """End torchrun and its ranks: SIGTERM to its process group (torchrun passes it on), then SIGKILL."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _result_from(data: dict[str, Any]) -> "RunResult":
    from tunescout.train.loop import RunResult

    names = {f.name for f in fields(RunResult)}
    return RunResult(**{k: v for k, v in data.items() if k in names})


def spawn_trial(
    config: TrainConfig,
    nprocs: int,
    early_stop: "EarlyStop | None" = None,
    task_eval: TaskEvalSpec | None = None,
    resume: bool = True,
    *,
    restart: bool = False,
    timeout_s: float | None = None,
    env: dict[str, str] | None = None,
    data_cache: str | None = None,
) -> "RunResult":
    """Train ``config`` on ``nprocs`` processes (FSDP2) and return rank 0's result.

    Args:
        config: the run's settings (its ``output_dir`` is the run directory).
        nprocs: processes to start on this machine, one per GPU (on CPU: gloo, any number).
        early_stop: called here with every step's :class:`~tunescout.train.telemetry.StepRecord`,
            as ``train(early_stop=...)`` would be; its verdict (None, a reason, ``Pause``) ends or
            pauses every rank. An exception it raises ends the run (all ranks) and propagates.
        task_eval: how each rank builds its ``task_eval`` (see :class:`TaskEvalSpec`).
        resume: continue from the newest checkpoint in ``output_dir`` (as ``train(resume=...)``);
            a run directory trained on another number of processes is refused.
        restart: start over, removing the run already in ``output_dir``.
        timeout_s: end the ranks and report ``failed`` after this many seconds (checked between
            records: an ``early_stop`` that blocks holds it off).
        env: environment of the ranks (default: this process's), e.g. with ``CUDA_VISIBLE_DEVICES``.
        data_cache: the ranks' ``train(data_cache=...)``: prepared data to read rather than tokenise.

    Returns:
        The :class:`~tunescout.train.loop.RunResult` rank 0 sent (also in ``result.json``); a run
        whose ranks died without sending one is ``failed`` with the reason.

    Raises:
        ValueError: ``nprocs`` is below 1.
        TypeError: ``task_eval`` is not a :class:`TaskEvalSpec` (callables cannot cross processes).
    """
    if nprocs < 1:
        raise ValueError(f"nprocs must be >= 1, got {nprocs}")
    if task_eval is not None and not isinstance(task_eval, TaskEvalSpec):
        raise TypeError("spawn_trial's task_eval must be a TaskEvalSpec('module:factory', {kwargs}): a callable "
                        "cannot be sent to other processes")
    authkey = secrets.token_bytes(32)
    with tempfile.TemporaryDirectory(prefix="tunescout-spawn-") as tmp, \
            Listener(("127.0.0.1", 0), authkey=authkey) as listener:
        spec = {"config": config.to_dict(), "resume": resume, "restart": restart,
                "early_stop": early_stop is not None, "address": list(listener.address), "authkey": authkey.hex(),
                "task_eval": asdict(task_eval) if task_eval else None, "data_cache": data_cache}
        spec_file = Path(tmp) / "spec.json"
        spec_file.touch(mode=0o600)
        spec_file.write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nprocs}",
               "-m", "tunescout.train.distributed", str(spec_file)]
        proc = subprocess.Popen(cmd, env=dict(env) if env is not None else None, start_new_session=True,
                                preexec_fn=_parent_death_signal())
        try:
            return _serve(proc, listener, authkey, early_stop, timeout_s, config.output.output_dir)
        finally:
            _stop(proc)


def _accept(listener: Listener, box: list[Connection]) -> None:
    """Accept rank 0's connection (a stranger failing the authkey handshake is skipped)."""
    from multiprocessing import AuthenticationError

    while True:
        try:
            box.append(listener.accept())
            return
        except AuthenticationError:
            continue
        except OSError:  # the listener closed
            return


def _serve(proc: subprocess.Popen, listener: Listener, authkey: bytes, early_stop: "EarlyStop | None",
           timeout_s: float | None, output_dir: str) -> "RunResult":
    """Answer rank 0 until torchrun exits; the result it sent, else a ``failed`` one."""
    from tunescout.train.telemetry import StepRecord

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    box: list[Connection] = []
    acceptor = threading.Thread(target=_accept, args=(listener, box), name="spawn-accept", daemon=True)
    acceptor.start()
    result: dict[str, Any] | None = None
    conn: Connection | None = None
    try:
        while True:
            exited = proc.poll() is not None  # read first: whatever rank 0 sent before is drained below
            if conn is None and box:
                conn = box.pop()
            if conn is not None:
                try:
                    while conn.poll(_POLL_S):
                        kind, body = conn.recv()
                        if kind == "record":
                            conn.send(early_stop(StepRecord(**body)) if early_stop else None)
                        elif kind == "done":
                            result = body
                except (EOFError, OSError):  # rank 0 is gone; torchrun's exit tells the rest
                    conn.close()
                    conn = None
            else:
                time.sleep(_POLL_S)
            if exited and (conn is None or result is not None):
                break
            if deadline is not None and time.monotonic() > deadline:
                _stop(proc)
                return _failed(output_dir, f"timed out after {timeout_s:.0f} s")
    finally:
        if conn is not None:
            conn.close()
        if acceptor.is_alive():  # rank 0 never connected: connect ourselves to end the accept
            try:
                Client(listener.address, authkey=authkey).close()
            except OSError:
                pass
            acceptor.join(5.0)
        for leftover in box:
            leftover.close()
    if result is not None:
        return _result_from(result)
    return _failed(output_dir, f"torchrun exited with status {proc.returncode} before rank 0 reported a result")


def _failed(output_dir: str, reason: str) -> "RunResult":
    """A ``failed`` result (not one read from ``result.json``: that may be an earlier attempt's)."""
    return _result_from({"status": "failed", "reason": reason, "output_dir": output_dir})


def run_spawned_rank(spec_file: str) -> int:
    """The body of every rank :func:`spawn_trial` starts (``python -m tunescout.train.distributed SPEC``).

    Returns:
        The process exit status: 0 when the run ended as completed, stopped or paused.
    """
    from tunescout.config import build_config
    from tunescout.train.loop import train
    from tunescout.train.telemetry import StepRecord

    _parent_death_signal()()
    spec = json.loads(Path(spec_file).read_text())
    is_main = int(os.environ.get("RANK", "0")) == 0
    conn = Client(tuple(spec["address"]), authkey=bytes.fromhex(spec["authkey"])) if is_main else None

    def ask(record: StepRecord) -> Any:
        conn.send(("record", asdict(record)))  # type: ignore[union-attr]
        return conn.recv()  # type: ignore[union-attr]

    try:
        config = build_config(spec["config"])
        task_eval = TaskEvalSpec(**spec["task_eval"]).build() if spec.get("task_eval") else None
        result = train(config, resume=spec["resume"], restart=spec["restart"],
                       early_stop=ask if is_main and spec["early_stop"] else None, task_eval=task_eval,
                       data_cache=spec.get("data_cache"))
        summary, status = asdict(result), 0 if result.status in ("completed", "stopped", "paused") else 1
    except BaseException as exc:  # noqa: BLE001 - reported to the caller, then the process fails
        summary = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc(limit=8), "output_dir": spec["config"].get("output_dir", "")}
        status = 1
    if conn is not None:
        try:
            conn.send(("done", summary))
            conn.close()
        except OSError:
            pass
    return status
