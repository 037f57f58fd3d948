"""A run directory's guard rails: one process at a time, and what "start over" removes.

Two processes training into one folder would interleave checkpoints and telemetry into a run
that is neither, so :func:`lock_run_dir` takes an exclusive ``flock`` on ``.lock`` for as long
as a run trains. The kernel drops the lock when the process dies, however it dies, so a killed
run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

__all__ = ["RUN_OUTPUTS", "RunDirLocked", "clear_run", "holds_run", "lock_run_dir"]

RUN_OUTPUTS = ("checkpoints", "model", "telemetry.jsonl", "eval.jsonl", "result.json", "run.json", "config.yaml")
"""What a run writes into its directory; ``--restart`` removes exactly these."""


class RunDirLocked(RuntimeError):
    """Another process is training in this run directory."""


@contextlib.contextmanager
def lock_run_dir(run_dir: str | Path) -> Iterator[None]:
    """Hold the run directory's lock (the pid of the holder is written into ``.lock``).

    Raises:
        RunDirLocked: another live process holds it.
    """
    import fcntl

    path = Path(run_dir) / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunDirLocked(f"{run_dir} is in use: process {holder} is training there "
                               "(wait for it to end, or give this run another output_dir)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def holds_run(run_dir: str | Path) -> bool:
    """Whether a run has written anything into ``run_dir``."""
    return any((Path(run_dir) / name).exists() for name in RUN_OUTPUTS)


def clear_run(run_dir: str | Path) -> None:
    """Remove a run's outputs (and nothing else) so it can start over."""
    for name in RUN_OUTPUTS:
        path = Path(run_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
