"""The study store: its contract, the statuses a trial moves through, and :func:`open_store`.

The contract, in the manner of Optuna's ``BaseStorage``:

* **One writer.** Only the sweep driver writes (workers report to it), and a lock beside the
  store keeps a second driver out. Every reporting command opens the store read-only, which
  never creates a store, a table or a row (a mistyped path is an error; SQLite may leave its
  ``-wal``/``-shm`` sidecar files next to an existing store, as any reader of a WAL database does).
* **Trials are immutable records plus status transitions.** A trial's identity (its id, the
  config it trains) never changes once added; only its status and progress do, and only along
  :data:`TRANSITIONS`: ``pending → running → completed | stopped | diverged | failed``,
  ``running → pending`` when a killed driver's trials are requeued or a failed attempt is retried, and ``stopped → pending``
  when the study's stopping rule changed (the rule that stopped it no longer applies; it
  resumes from its checkpoint). In ``promote`` mode a trial also goes ``running → paused`` at a
  rung, and leaves ``paused`` only by the cohort's recorded decision there (``→ pending`` to
  continue, ``→ stopped``). Anything else is refused.
* **Decisions are recorded.** A promotion decision (trial, rung, rank, kept or not) is written
  in the same transaction as the status changes it makes, so a restarted driver finds every
  rung it decided and never decides one again.
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

from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

from tunescout.study.records import FINISHED, SCHEMA_VERSION, STATUSES, TRANSITIONS, StoreError, SyncResult

__all__ = ["FINISHED", "SCHEMA_VERSION", "STATUSES", "TRANSITIONS", "StoreError", "StudyStore", "SyncResult",
           "open_store"]

class StudyStore(Protocol):
    """What the sweep driver, the reporting commands and the analysis read and write."""

    readonly: bool
    path: Path | str

    # --- writing (the driver only) ---
    def sync_trials(self, study: str, spec: dict[str, Any], trials: Iterable[dict[str, Any]]) -> SyncResult:
        """Record the study's spec and the trials it expands to (new ones added as ``pending``,
        existing ones kept with their results and given the spec's ``hparams``); trials not in the
        set become superseded."""

    def requeue_running(self, study: str) -> list[str]:
        """``running`` trials of a killed driver go back to ``pending``; returns their ids."""

    def reopen_stopped(self, study: str) -> list[str]:
        """The study's stopping rule changed: its current ``stopped`` and ``paused`` trials go back
        to ``pending`` and the old rule's promotion decisions are dropped; returns the ids."""

    def requeue_failed(self, study: str) -> list[str]:
        """The study's current ``failed`` trials go back to ``pending`` (``sweep --retry-failed``,
        once their cause is fixed), their reason saying what failed before; returns the ids."""

    def mark_running(self, trial_id: str) -> int:
        """``pending → running``, one more attempt; returns the attempt number."""

    def retry(self, trial_id: str, reason: str) -> None:
        """``running → pending`` after a failed attempt that will be launched again; ``reason``
        (why the attempt failed) stays on the trial until it ends."""

    def add_telemetry(self, trial_id: str, record: dict[str, Any]) -> None:
        """One step record of a running trial (a step redone after a resume replaces the old one)."""

    def finish(self, trial_id: str, status: str, reason: str = "", metrics: dict[str, float] | None = None,
               totals: dict[str, Any] | None = None) -> None:
        """``running →`` a final status, with the trial's totals and final metrics."""

    def pause(self, trial_id: str, reason: str = "", totals: dict[str, Any] | None = None) -> None:
        """``running → paused`` at a rung, its checkpoint written."""

    def decide_rung(self, rung: int, decisions: Sequence[dict[str, Any]], resume: Iterable[str]) -> None:
        """Record a promotion decision at ``rung`` (1-based) for the paused trials of one cohort,
        each ``{trial_id, rank, n, reason}``: a reason of None keeps the trial, a reason stops it
        (``paused → stopped``); the kept ones in ``resume`` go ``paused → pending`` (the others
        stay paused: they are already past the next rung)."""

    def decisions(self, study: str | None = None) -> list[dict[str, Any]]:
        """Recorded promotion decisions: ``trial_id, rung, rank, n, kept, reason, decided_at``."""

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
        """Step records in step order (of one trial, whatever its study, or of the study's trials)."""

    def results(self, trial_id: str | None = None, study: str | None = None,
                all_versions: bool = False) -> list[dict[str, Any]]:
        """Metric values (``name``, ``value``, ``samples``)."""

    def counts(self, study: str | None = None, all_versions: bool = False) -> dict[str, int]:
        """Trials per status, every status listed."""

    def tokens_trained(self, study: str | None = None) -> int:
        """Tokens trained by the study's current trials."""

    def close(self) -> None: ...

    def __enter__(self) -> "StudyStore": ...

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None: ...


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
