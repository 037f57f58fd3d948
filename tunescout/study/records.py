"""The plain records and constants a study store's contract speaks in: trial statuses and the
moves between them, the store's errors, what a sync did, the schema version.

Their own module so that the store backends (``sqlite_store.py``) and the readers of stores
(``analysis/``) need not import the contract module, which opens the backends.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunescout.status import FINISHED, STATUSES

__all__ = ["FINISHED", "SCHEMA_VERSION", "STATUSES", "TRANSITIONS", "StoreError", "SyncResult"]

SCHEMA_VERSION = 3
TRANSITIONS: dict[str, tuple[str, ...]] = {"pending": ("running",), "running": ("pending", "paused", *FINISHED),
                                           "paused": ("pending", "stopped"), "stopped": ("pending",),
                                           "failed": ("pending",)}
"""Allowed status changes. Completed and diverged trials never change again; a stopped one only
through :meth:`StudyStore.reopen_stopped`; a failed one only through
:meth:`StudyStore.requeue_failed` (the user fixed the cause); a paused one (waiting at a rung,
with a checkpoint) only through :meth:`StudyStore.decide_rung`."""


class StoreError(ValueError):
    """Not a tunescout store, a missing one opened read-only, or a refused status transition."""


@dataclass(frozen=True)
class SyncResult:
    """What :meth:`StudyStore.sync_trials` did."""

    new: int
    """Trials of the spec not in the store before, added as ``pending``."""
    kept: int
    """Trials of the spec already in the store, with their status and results."""
    superseded: int
    """Trials of the study that belong to earlier spec versions, in all."""
    newly_superseded: int
    """Of those, the ones this sync left behind (they were current before it)."""
    version: int
    """The study's spec version after the sync."""
