"""The study store: its contract, the statuses a trial moves through, and :func:`open_store`.

The contract, in the manner of Optuna's ``BaseStorage``:

* **One writer.** Only the sweep driver writes (workers report to it); every reporting command
  opens the store read-only, which never creates a file, a table or a row.
* **Trials are immutable records plus status transitions.** A trial's identity (its id, the
  config it trains) never changes once added; only its status and progress do, and only along
  :data:`TRANSITIONS`: ``pending → running → completed | stopped | diverged | failed``, and
  ``running → pending`` when a killed driver's trials are requeued. Anything else is refused.
* **Spec versions.** Each sweep records the set of trials its spec expands to. When that set
  changes (a result-relevant setting changed), the study's version goes up; trials of the new
  set belong to it, and the others stay in the store as *superseded*, left out of every reader
  unless it asks for ``all_versions``.
* **Resume needs nothing else.** A trial's status, attempts, telemetry (each record tagged with
  the attempt that wrote it) and results are in the store; its weights are in its run directory.
* **Queries are keyed by study.** A store may hold several studies; every reader takes the study
  name (``None`` means the store's only study, and is an error when it holds several).
* **Schema version** in the ``meta`` table; an older store is upgraded when opened for writing,
  and a newer one is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

__all__ = ["FINISHED", "SCHEMA_VERSION", "STATUSES", "TRANSITIONS", "StoreError", "StudyStore", "SyncResult",
           "open_store"]

SCHEMA_VERSION = 2
STATUSES = ("pending", "running", "completed", "stopped", "diverged", "failed")
FINISHED = ("completed", "stopped", "diverged", "failed")
"""The statuses a trial ends in; the one definition every module imports."""
TRANSITIONS: dict[str, tuple[str, ...]] = {"pending": ("running",), "running": ("pending", *FINISHED)}
"""Allowed status changes; finished trials never change again."""


class StoreError(ValueError):
    """Not a tunescout store, a missing one opened read-only, or a refused status transition."""


@dataclass(frozen=True)
class SyncResult:
    """What :meth:`StudyStore.sync_trials` did: trials added, kept, superseded, and the spec version."""

    new: int
    kept: int
    superseded: int
    version: int


class StudyStore(Protocol):
    """What the sweep driver, the reporting commands and the analysis read and write."""

    readonly: bool
    path: Path | str

    # --- writing (the driver only) ---
    def sync_trials(self, study: str, spec: dict[str, Any], trials: Iterable[dict[str, Any]]) -> SyncResult:
        """Record the study's spec and the trials it expands to (new ones added as ``pending``,
        existing ones kept with their results); trials not in the set become superseded."""

    def requeue_running(self, study: str) -> list[str]:
        """``running`` trials of a killed driver go back to ``pending``; returns their ids."""

    def mark_running(self, trial_id: str) -> int:
        """``pending → running``, one more attempt; returns the attempt number."""

    def add_telemetry(self, trial_id: str, record: dict[str, Any]) -> None:
        """One step record of a running trial (a step redone after a resume replaces the old one)."""

    def finish(self, trial_id: str, status: str, reason: str = "", metrics: dict[str, float] | None = None,
               totals: dict[str, Any] | None = None) -> None:
        """``running →`` a final status, with the trial's totals and final metrics."""

    def add_elapsed(self, study: str, seconds: float) -> None:
        """Add driver time to the study's wall time."""

    # --- reading ---
    def studies(self) -> list[str]:
        """Study names in creation order."""

    def study(self, name: str | None = None) -> dict[str, Any] | None:
        """``name``, ``spec`` (JSON text), ``version``, ``created_at``, ``elapsed_s``; None if no study."""

    def study_spec(self, name: str | None = None) -> dict[str, Any] | None:
        """The study's current spec, parsed."""

    def trials(self, study: str | None = None, *, status: str | Sequence[str] | None = None,
               all_versions: bool = False) -> list[dict[str, Any]]:
        """Trial rows (``hparams``, ``config`` parsed; ``superseded`` flag) in insertion order."""

    def telemetry(self, trial_id: str | None = None, study: str | None = None,
                  all_versions: bool = False) -> list[dict[str, Any]]:
        """Step records in step order."""

    def results(self, trial_id: str | None = None, study: str | None = None,
                all_versions: bool = False) -> list[dict[str, Any]]:
        """Metric values (``name``, ``value``, ``samples``)."""

    def counts(self, study: str | None = None, all_versions: bool = False) -> dict[str, int]:
        """Trials per status, every status listed."""

    def tokens_trained(self, study: str | None = None) -> int:
        """Tokens trained by the study's current trials."""

    def close(self) -> None: ...


def open_store(path: str | Path, readonly: bool = False) -> "StudyStore":
    """Open a study store: a SQLite file, or ``:memory:`` (tests, throwaway studies).

    Args:
        path: the store's file.
        readonly: open for reading only. The file must exist and be a tunescout store; nothing
            is created or changed (a mistyped path is an error naming it, not a new empty store).

    Raises:
        StoreError: ``readonly`` and no file at ``path``, or the file is not a tunescout store
            (or is of a newer schema).
    """
    from tunescout.study.sqlite_store import SQLiteStore

    return SQLiteStore(path, readonly=readonly)
