"""One exclusive ``flock`` helper, for every lock tunescout takes: a run directory while a run
trains in it, a study store while a sweep drives it, a tracker's store while it is first created.

Its own module, below ``train/`` and ``track/``, because both need it and neither may import the
other. The kernel drops a ``flock`` when its process dies, however it dies, so a killed process
never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

__all__ = ["RunDirLocked", "hold_lock"]


class RunDirLocked(RuntimeError):
    """Another process holds a lock: training in this run directory, or driving this study."""


@contextlib.contextmanager
def hold_lock(path: str | Path, busy: str | None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing; the holder's pid written in it).

    Args:
        busy: the error when another process holds it (``{pid}`` filled in); None waits for it instead.

    Raises:
        RunDirLocked: another live process holds it and ``busy`` is given.
    """
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if busy is None else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunDirLocked(busy.format(pid=holder)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock
