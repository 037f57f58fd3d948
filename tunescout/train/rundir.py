"""A run directory's guard rails: one process at a time, and what "start over" removes.

Two processes training into one folder would interleave checkpoints and telemetry into a run
that is neither, so :func:`lock_run_dir` takes an exclusive ``flock`` on ``.lock`` for as long
as a run trains. The kernel drops the lock when the process dies, however it dies, so a killed
run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import uuid
from pathlib import Path

from tunescout.locks import RunDirLocked, hold_lock
from tunescout.train.identity import RUN_FILE

__all__ = ["RUN_OUTPUTS", "STORAGE_CHECK", "RunDirLocked", "StorageNotShared", "check_storage", "clear_run",
           "hold_lock", "holds_run", "lock_run_dir", "mark_storage"]

RUN_OUTPUTS = ("checkpoints", "model", "telemetry.jsonl", "eval.jsonl", "result.json", RUN_FILE, "config.yaml")
"""What a run writes into its directory; ``--restart`` removes exactly these."""


def lock_run_dir(run_dir: str | Path) -> contextlib.AbstractContextManager[None]:
    """Hold the run directory's lock (``.lock``) while a run trains in it.

    Raises:
        RunDirLocked: another live process is training there.
    """
    return hold_lock(Path(run_dir) / ".lock", f"{run_dir} is in use: process {{pid}} is training there "
                                              "(wait for it to end, or give this run another output_dir)")


def holds_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a run that trained: anything a run writes, except the record of one
    that failed before its first step (bad data, a tracker that did not start). That record is
    kept to say why, but there is nothing in it to lose, so a plain ``train`` may start over."""
    run_dir = Path(run_dir)
    if not any((run_dir / name).exists() for name in RUN_OUTPUTS):
        return False
    try:
        result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    trained = any((run_dir / name).exists() for name in ("checkpoints", "model")) or \
        (run_dir / "telemetry.jsonl").exists() and (run_dir / "telemetry.jsonl").stat().st_size > 0
    return trained or not (isinstance(result, dict) and result.get("status") == "failed" and not result.get("steps"))


def clear_run(run_dir: str | Path) -> None:
    """Remove a run's outputs (and nothing else) so it can start over."""
    for name in RUN_OUTPUTS:
        path = Path(run_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


STORAGE_CHECK = ".tunescout-storage"
"""The prefix of the token file a sweep driver writes into its runs folder for its trials to read back."""


class StorageNotShared(RuntimeError):
    """A trial's node does not see the runs folder its driver wrote."""


def mark_storage(folder: str | Path, study: str) -> list[str]:
    """Write a fresh token into a study's runs folder and return ``[path, token]`` for the trials.

    The token file is the study's own (several studies may share one folder), named after a
    hash of the study name.

    On a cluster every node must see the runs folder (checkpoints there are what a trial retried
    on another node resumes from). A trial that cannot read this token back is on a node where
    the folder is not shared: :func:`check_storage` fails it at once, saying so, instead of
    letting it train from scratch into a folder nobody else sees.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    path = folder / f"{STORAGE_CHECK}-{hashlib.sha256(study.encode()).hexdigest()[:12]}"
    tmp = folder / f"{path.name}.{token}.tmp"
    tmp.write_text(token)
    os.replace(tmp, path)
    return [str(path), token]


def check_storage(path: str | Path, token: str) -> None:
    """Raise :class:`StorageNotShared` unless ``path`` holds ``token`` (see :func:`mark_storage`)."""
    try:
        found = Path(path).read_text().strip()
    except OSError:
        found = None
    if found != token:
        raise StorageNotShared(
            f"node {socket.gethostname()} does not see the study's runs folder {Path(path).parent} as the sweep "
            f"driver wrote it ({'no ' + Path(path).name if found is None else 'another driver token'} there): "
            "on a cluster set the study's `storage:` to a path every node mounts")
