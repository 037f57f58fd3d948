"""Executors run trials and hand their telemetry back to the driver.

The interface is small so that a Ray executor can drive the same stopping rule and the same
store: ``submit`` a trial, read ``Event``s (a telemetry record, which needs a ``reply`` with
the verdict, or the trial's end), ``cancel``, ``shutdown``.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

__all__ = ["Event", "Executor", "LocalExecutor", "default_slots"]

log = logging.getLogger(__name__)


@dataclass
class Event:
    """What a running trial reported to the driver."""

    trial_id: str
    kind: str
    """``record`` (reply with a verdict) or ``done``."""
    data: dict[str, Any] = field(default_factory=dict)


class Executor(Protocol):
    """Runs trials. ``slots`` trials at most run at once."""

    slots: int

    def submit(self, trial_id: str, payload: dict[str, Any]) -> None: ...

    def running(self) -> list[str]: ...

    def next_event(self, timeout: float | None = None) -> Event | None:
        """The next record or end of any running trial, or None after ``timeout`` seconds."""

    def reply(self, trial_id: str, verdict: str | None) -> None:
        """Answer a ``record`` event: None to continue, a reason to stop the trial."""

    def cancel(self, trial_id: str) -> None: ...

    def shutdown(self) -> None: ...


def default_slots() -> list[int | None]:
    """One slot per visible GPU, or a single CPU slot (a CPU trial already uses every core)."""
    import torch

    if torch.cuda.is_available():
        return list(range(torch.cuda.device_count()))
    return [None]


@dataclass
class _Running:
    process: Any
    conn: Connection
    device: int | None
    done: bool = False


class LocalExecutor:
    """A pool of trial processes on this machine, forked from a server that preloaded torch.

    Each trial is its own process, so a crash or an out-of-memory kill fails that trial only.
    """

    def __init__(self, slots: int | None = None, threads: int | None = None) -> None:
        devices = default_slots()
        self.devices: list[int | None] = devices if slots is None else [devices[i % len(devices)] for i in range(slots)]
        self.slots = len(self.devices)
        self.threads = threads or (max(1, (os.cpu_count() or 1) // self.slots) if devices == [None] else None)
        self._ctx = mp.get_context("forkserver")
        self._ctx.set_forkserver_preload(["tunescout.study.worker"])
        self._trials: dict[str, _Running] = {}

    def submit(self, trial_id: str, payload: dict[str, Any]) -> None:
        from tunescout.study.worker import run_trial

        busy = {r.device for r in self._trials.values()}
        device = next((d for d in self.devices if d not in busy or d is None), self.devices[0])
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=run_trial, args=(child, {**payload, "cuda_device": device,
                                                                    "threads": self.threads,
                                                                    "driver_pid": os.getpid()}),
                                    name=f"trial-{trial_id}")
        process.start()
        child.close()
        self._trials[trial_id] = _Running(process, parent, device)

    def running(self) -> list[str]:
        return list(self._trials)

    def next_event(self, timeout: float | None = None) -> Event | None:
        if not self._trials:
            return None
        by_conn = {r.conn: tid for tid, r in self._trials.items()}
        for conn in wait(list(by_conn), timeout):
            tid = by_conn[conn]
            try:
                kind, data = conn.recv()
            except (EOFError, OSError):
                return self._reap(tid, "process exited without reporting")
            if kind == "done":
                self._reap(tid, None)
                return Event(tid, "done", data)
            return Event(tid, kind, data)
        return None

    def _reap(self, trial_id: str, lost: str | None) -> Event | None:
        run = self._trials.pop(trial_id)
        run.process.join(timeout=30)
        run.conn.close()
        if lost is None:
            return None
        code = run.process.exitcode
        return Event(trial_id, "done", {"status": "failed", "reason": f"{lost} (exit code {code})"})

    def reply(self, trial_id: str, verdict: str | None) -> None:
        run = self._trials.get(trial_id)
        if run is not None:
            try:
                run.conn.send(verdict)
            except (BrokenPipeError, OSError):
                pass  # the process died; its EOF arrives as the next event

    def cancel(self, trial_id: str) -> None:
        run = self._trials.get(trial_id)
        if run is not None:
            run.process.kill()

    def shutdown(self) -> None:
        for trial_id in list(self._trials):
            self.cancel(trial_id)
            self._reap(trial_id, "cancelled")
