"""The local executor: a pool of trial processes on this machine, talking over pipes."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from tunescout.study.messages import TrialEvent, TrialPayload, TrialSummary

__all__ = ["LocalExecutor", "PipeChannel", "default_slots"]

log = logging.getLogger(__name__)

REAP_S = 5.0
"""How long a trial's process may take to exit after it reported its end."""


class PipeChannel:
    """A trial's :class:`~tunescout.study.worker.Channel` to a driver on this machine: one pipe,
    which keeps the order of messages; a broken pipe (the driver died) raises."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def send(self, record: dict[str, Any]) -> None:
        self.conn.send(("record", record))

    def ask(self, record: dict[str, Any]) -> Any:
        self.conn.send(("ask", record))
        return self.conn.recv()

    def done(self, summary: TrialSummary) -> None:
        self.conn.send(("done", summary))


def _pipe_trial(conn: Connection, payload: TrialPayload) -> None:
    """The trial process's entry point."""
    from tunescout.study.worker import run_trial

    try:
        run_trial(PipeChannel(conn), payload)
    finally:
        conn.close()


def default_slots(gpus_per_trial: int = 1) -> list[str | None]:
    """The GPUs of each slot (``CUDA_VISIBLE_DEVICES`` values): one slot per ``gpus_per_trial``
    visible GPUs (one trial on that many processes), or a single CPU slot (a CPU trial already
    uses every core)."""
    import torch

    if not torch.cuda.is_available():
        if gpus_per_trial > 1:
            raise ValueError(f"executor.gpus_per_trial: {gpus_per_trial} GPUs per trial, but this machine has no CUDA GPU")
        return [None]
    count, per = torch.cuda.device_count(), max(1, gpus_per_trial)
    if per > count:
        raise ValueError(f"executor.gpus_per_trial: {per} GPUs per trial, but only {count} are visible")
    return [",".join(str(g) for g in range(i, i + per)) for i in range(0, count - per + 1, per)]


@dataclass
class _Running:
    process: Any
    conn: Connection
    device: str | None
    heard: bool = False
    """Whether the trial sent anything: one that never did died before its trial started."""


def _unguarded_script_hint() -> str:
    """Why a trial process dies before its first word when a Python script started the sweep:
    each trial process imports the script again, and without the ``__main__`` guard that import
    starts another sweep. Said only when a script (not the CLI) is running."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) or ""
    if not path.endswith(".py") or os.path.basename(path) == "__main__.py":  # `python -m pkg`: no script of the user's
        return ""
    return (f"; it ended before its trial began: if {os.path.basename(path)} starts the sweep or tune, "
            "keep that under `if __name__ == \"__main__\":`, since each trial process imports the script")


class LocalExecutor:
    """A pool of trial processes on this machine, forked from a server that preloaded torch.

    Each trial is its own process, so a crash or an out-of-memory kill fails that trial only.
    """

    def __init__(self, slots: int | None = None, threads: int | None = None, ranks: int = 1) -> None:
        self.ranks = ranks
        devices = default_slots(ranks)
        self.devices: list[str | None] = devices if slots is None else [devices[i % len(devices)] for i in range(slots)]
        self.slots = len(self.devices)
        self.threads = threads or (max(1, (os.cpu_count() or 1) // self.slots) if devices == [None] else None)
        self._ctx = mp.get_context("forkserver")
        self._ctx.set_forkserver_preload(["tunescout.study.worker"])
        self._trials: dict[str, _Running] = {}

    def submit(self, payload: TrialPayload) -> None:
        busy = {r.device for r in self._trials.values()}
        device = next((d for d in self.devices if d not in busy or d is None), self.devices[0])
        parent, child = self._ctx.Pipe()
        placed = payload.placed(cuda_device=device, threads=self.threads, ranks=self.ranks, driver_pid=os.getpid())
        process = self._ctx.Process(target=_pipe_trial, args=(child, placed), name=f"trial-{payload.trial_id}")
        process.start()
        child.close()
        self._trials[payload.trial_id] = _Running(process, parent, device)

    def running(self) -> list[str]:
        return list(self._trials)

    def next_event(self, timeout: float | None = None) -> TrialEvent | None:
        if not self._trials:
            return None
        by_conn = {r.conn: tid for tid, r in self._trials.items()}
        for conn in wait(list(by_conn), timeout):
            tid = by_conn[conn]
            try:
                kind, data = conn.recv()
            except (EOFError, OSError):
                return self._reap(tid, "process exited without reporting")
            self._trials[tid].heard = True
            if kind == "done":
                self._reap(tid, None)
                return TrialEvent(tid, "done", summary=data)
            return TrialEvent(tid, kind, record=data)
        return None

    def _reap(self, trial_id: str, lost: str | None) -> TrialEvent | None:
        """Forget a trial whose process ended or reported its end, killing it if it lingers (a
        tracker's flush, CUDA teardown): the driver, and every trial waiting on it, never stalls."""
        run = self._trials.pop(trial_id)
        run.process.join(timeout=REAP_S)
        if run.process.is_alive():
            log.warning("trial %s: its process lingered %gs after its end; killed", trial_id, REAP_S)
            run.process.kill()
            run.process.join()
        run.conn.close()
        if lost is None:
            return None
        code = run.process.exitcode
        hint = _unguarded_script_hint() if code == 1 and not run.heard else ""
        return TrialEvent(trial_id, "done", summary=TrialSummary.lost(f"{lost} (exit code {code}){hint}"))

    def reply(self, trial_id: str, verdict: Any) -> None:
        run = self._trials.get(trial_id)
        if run is not None:
            try:
                run.conn.send(verdict)
            except (BrokenPipeError, OSError):
                pass  # the process died; its EOF arrives as the next event

    def cancel(self, trial_id: str) -> None:
        """Kill the trial's process; its end arrives as a ``done`` event (failed, cancelled)."""
        run = self._trials.get(trial_id)
        if run is not None:
            run.process.kill()

    def shutdown(self) -> None:
        for trial_id in list(self._trials):
            self.cancel(trial_id)
            self._reap(trial_id, "cancelled")
