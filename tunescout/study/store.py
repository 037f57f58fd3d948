"""The study store: one SQLite file holding trials, every telemetry record, evals and results.

Only the sweep driver writes (workers report to it), so SQLite in WAL mode with one writer is
all the concurrency we need; readers (`tunescout status`, exports, analysis) can read while a
sweep runs. Every change is a transaction, so a killed driver leaves a consistent file.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = ["SCHEMA_VERSION", "STATUSES", "Store"]

SCHEMA_VERSION = 1
STATUSES = ("pending", "running", "completed", "stopped", "diverged", "failed")
FINISHED = ("completed", "stopped", "diverged", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS studies (
    name TEXT PRIMARY KEY, spec TEXT NOT NULL, created_at REAL NOT NULL, elapsed_s REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS trials (
    trial_id TEXT PRIMARY KEY, study TEXT NOT NULL, model TEXT NOT NULL, method TEXT NOT NULL,
    dataset TEXT NOT NULL, hparams TEXT NOT NULL, seed INTEGER NOT NULL, config TEXT NOT NULL,
    planned_samples INTEGER, planned_tokens INTEGER,
    status TEXT NOT NULL DEFAULT 'pending', reason TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0, started_at REAL, finished_at REAL,
    steps INTEGER NOT NULL DEFAULT 0, samples INTEGER NOT NULL DEFAULT 0, tokens INTEGER NOT NULL DEFAULT 0,
    wall_s REAL NOT NULL DEFAULT 0, run_dir TEXT);
CREATE TABLE IF NOT EXISTS telemetry (
    trial_id TEXT NOT NULL, step INTEGER NOT NULL, samples INTEGER NOT NULL, tokens INTEGER NOT NULL,
    loss REAL, grad_norm REAL, lr REAL, tokens_per_s REAL, wall_s REAL, val_loss REAL, phase INTEGER,
    PRIMARY KEY (trial_id, step));
CREATE TABLE IF NOT EXISTS results (
    trial_id TEXT NOT NULL, name TEXT NOT NULL, value REAL, samples INTEGER NOT NULL,
    PRIMARY KEY (trial_id, name, samples));
"""

TELEMETRY_FIELDS = ("step", "samples", "tokens", "loss", "grad_norm", "lr", "tokens_per_s", "wall_s", "val_loss", "phase")


class Store:
    """A study's SQLite file. Construct with the path; the schema is created or checked."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)  # idempotent: CREATE ... IF NOT EXISTS
            row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise RuntimeError(f"{self.path}: schema version {row[0]}, this tunescout reads {SCHEMA_VERSION}")
        except BaseException:  # not a store (or another version): do not leak the connection
            self.db.close()
            raise

    def _tx(self) -> "_Transaction":
        return _Transaction(self.db)

    def close(self) -> None:
        """Close the connection (the file stays consistent: every change was a committed transaction)."""
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close()

    # --- writing (driver only) ---

    def upsert_study(self, name: str, spec: dict[str, Any]) -> None:
        """Create the study's row, or replace its spec (its creation time and elapsed time are kept)."""
        with self._tx():
            self.db.execute(
                "INSERT INTO studies (name, spec, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET spec=excluded.spec",
                (name, json.dumps(spec, default=str), time.time()),
            )

    def add_trials(self, study: str, trials: Iterable[dict[str, Any]]) -> int:
        """Insert trials not yet in the store; existing ones (and their results) are kept."""
        added = 0
        with self._tx():
            for t in trials:
                cur = self.db.execute(
                    "INSERT OR IGNORE INTO trials (trial_id, study, model, method, dataset, hparams, seed, config,"
                    " planned_samples, planned_tokens, run_dir) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (t["trial_id"], study, t["model"], t["method"], t["dataset"], json.dumps(t["hparams"]),
                     t["seed"], json.dumps(t["config"]), t.get("planned_samples"), t.get("planned_tokens"),
                     t.get("run_dir")),
                )
                added += cur.rowcount
        return added

    def requeue_running(self) -> list[str]:
        """Trials left ``running`` by a killed driver go back to ``pending`` (they resume from checkpoints)."""
        with self._tx():
            ids = [r[0] for r in self.db.execute("SELECT trial_id FROM trials WHERE status='running'")]
            self.db.execute("UPDATE trials SET status='pending' WHERE status='running'")
        return ids

    def mark_running(self, trial_id: str) -> None:
        """A trial was launched: ``running``, one more attempt, first start time kept."""
        with self._tx():
            self.db.execute(
                "UPDATE trials SET status='running', attempts=attempts+1, started_at=COALESCE(started_at, ?) "
                "WHERE trial_id=?", (time.time(), trial_id))

    def add_telemetry(self, trial_id: str, record: dict[str, Any]) -> None:
        """Store one step record (replacing a step redone after a resume), the trial's running
        totals, and the validation loss and task metrics taken with it."""
        with self._tx():
            self.db.execute(
                f"INSERT OR REPLACE INTO telemetry (trial_id, {', '.join(TELEMETRY_FIELDS)}) "
                f"VALUES (?{', ?' * len(TELEMETRY_FIELDS)})",
                (trial_id, *(record.get(k) for k in TELEMETRY_FIELDS)),
            )
            self.db.execute("UPDATE trials SET steps=?, samples=?, tokens=? WHERE trial_id=?",
                            (record["step"], record["samples"], record["tokens"], trial_id))
            if record.get("val_loss") is not None:
                self._put_result(trial_id, "val_loss", record["val_loss"], record["samples"])
            for name, value in (record.get("metrics") or {}).items():
                self._put_result(trial_id, name, value, record["samples"])

    def _put_result(self, trial_id: str, name: str, value: float | None, samples: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO results (trial_id, name, value, samples) VALUES (?,?,?,?)",
                        (trial_id, name, value, samples))

    def finish(self, trial_id: str, status: str, reason: str = "", metrics: dict[str, float] | None = None,
               totals: dict[str, Any] | None = None) -> None:
        """Record a trial's final status, its totals and final metrics, in one transaction."""
        if status not in FINISHED:
            raise ValueError(f"not a final status: {status!r}")
        totals = totals or {}
        with self._tx():
            samples = totals.get("samples")
            if samples is None:
                samples = self.db.execute("SELECT samples FROM trials WHERE trial_id=?", (trial_id,)).fetchone()[0]
            for name, value in (metrics or {}).items():
                self._put_result(trial_id, name, value, samples)
            self.db.execute(
                "UPDATE trials SET status=?, reason=?, finished_at=?, steps=COALESCE(?, steps),"
                " samples=COALESCE(?, samples), tokens=COALESCE(?, tokens), wall_s=COALESCE(?, wall_s)"
                " WHERE trial_id=?",
                (status, reason, time.time(), totals.get("steps"), totals.get("samples"), totals.get("tokens"),
                 totals.get("wall_s"), trial_id),
            )

    def add_elapsed(self, study: str, seconds: float) -> None:
        """Add driver time to the study's wall time (kept across restarts of the sweep)."""
        with self._tx():
            self.db.execute("UPDATE studies SET elapsed_s = elapsed_s + ? WHERE name=?", (seconds, study))

    # --- reading ---

    def trials(self, status: str | Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Trial rows in insertion order (``hparams`` and ``config`` parsed), optionally of some statuses."""
        sql, args = "SELECT * FROM trials", ()
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            sql += f" WHERE status IN ({','.join('?' * len(wanted))})"
            args = tuple(wanted)
        rows = [dict(r) for r in self.db.execute(sql + " ORDER BY rowid", args)]
        for r in rows:
            r["hparams"], r["config"] = json.loads(r["hparams"]), json.loads(r["config"])
        return rows

    def _rows(self, table: str, order: str, trial_id: str | None) -> list[dict[str, Any]]:
        where, args = ("WHERE trial_id=?", (trial_id,)) if trial_id is not None else ("", ())
        return [dict(r) for r in self.db.execute(f"SELECT * FROM {table} {where} ORDER BY trial_id, {order}", args)]

    def telemetry(self, trial_id: str | None = None) -> list[dict[str, Any]]:
        """Step records, of one trial or of all, in step order."""
        return self._rows("telemetry", "step", trial_id)

    def results(self, trial_id: str | None = None) -> list[dict[str, Any]]:
        """Metric values (``name``, ``value``, ``samples`` seen), of one trial or of all."""
        return self._rows("results", "name, samples", trial_id)

    def counts(self) -> dict[str, int]:
        """Number of trials in each status (every status listed, zeros included)."""
        counts = {s: 0 for s in STATUSES}
        for status, n in self.db.execute("SELECT status, COUNT(*) FROM trials GROUP BY status"):
            counts[status] = n
        return counts

    def tokens_trained(self) -> int:
        """Tokens trained so far, summed over every trial."""
        return int(self.db.execute("SELECT COALESCE(SUM(tokens), 0) FROM trials").fetchone()[0])

    def study(self) -> dict[str, Any] | None:
        """The (first) study's row: ``name``, ``spec`` (JSON text), ``created_at``, ``elapsed_s``."""
        row = self.db.execute("SELECT * FROM studies ORDER BY created_at LIMIT 1").fetchone()
        return dict(row) if row else None

    def study_spec(self) -> dict[str, Any] | None:
        """The (first) study's spec as the sweep saved it, parsed; None for a store without a study."""
        study = self.study()
        return json.loads(study["spec"]) if study else None

    def study_specs(self) -> dict[str, dict[str, Any]]:
        """Every study's spec, parsed, by study name (a store may hold several studies)."""
        return {r["name"]: json.loads(r["spec"]) for r in self.db.execute("SELECT name, spec FROM studies")}


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
