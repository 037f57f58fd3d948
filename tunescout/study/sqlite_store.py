"""The SQLite implementation of the study store (see :mod:`tunescout.study.store` for the contract).

SQLite in WAL mode with one writer is all the concurrency a study needs: readers (``tunescout
status``, exports, reports) read while a sweep runs. Every change is a transaction, so a killed
driver leaves a consistent file.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import urllib.parse
from pathlib import Path
from typing import Any, Iterable, Sequence

from tunescout.study.records import FINISHED, SCHEMA_VERSION, STATUSES, TRANSITIONS, StoreError, SyncResult

__all__ = ["SQLiteStore", "TELEMETRY_FIELDS"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS studies (
    name TEXT PRIMARY KEY, spec TEXT NOT NULL, created_at REAL NOT NULL, elapsed_s REAL NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 0, trial_set TEXT);
CREATE TABLE IF NOT EXISTS trials (
    trial_id TEXT PRIMARY KEY, study TEXT NOT NULL, model TEXT NOT NULL, method TEXT NOT NULL,
    dataset TEXT NOT NULL, hparams TEXT NOT NULL, seed INTEGER NOT NULL, config TEXT NOT NULL,
    planned_samples INTEGER, planned_tokens INTEGER,
    status TEXT NOT NULL DEFAULT 'pending', reason TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0, started_at REAL, finished_at REAL,
    steps INTEGER NOT NULL DEFAULT 0, samples INTEGER NOT NULL DEFAULT 0, tokens INTEGER NOT NULL DEFAULT 0,
    wall_s REAL NOT NULL DEFAULT 0, run_dir TEXT, spec_version INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS telemetry (
    trial_id TEXT NOT NULL, step INTEGER NOT NULL, samples INTEGER NOT NULL, tokens INTEGER NOT NULL,
    loss REAL, grad_norm REAL, lr REAL, tokens_per_s REAL, wall_s REAL, val_loss REAL, phase INTEGER,
    attempt INTEGER, PRIMARY KEY (trial_id, step));
CREATE TABLE IF NOT EXISTS results (
    trial_id TEXT NOT NULL, name TEXT NOT NULL, value REAL, samples INTEGER NOT NULL,
    PRIMARY KEY (trial_id, name, samples));
CREATE TABLE IF NOT EXISTS decisions (
    trial_id TEXT NOT NULL, rung INTEGER NOT NULL, rank INTEGER NOT NULL, n INTEGER NOT NULL,
    kept INTEGER NOT NULL, reason TEXT NOT NULL DEFAULT '', decided_at REAL NOT NULL,
    PRIMARY KEY (trial_id, rung));
"""

_ADDED_IN_V2 = {
    "studies": (("version", "INTEGER NOT NULL DEFAULT 0"), ("trial_set", "TEXT")),
    "trials": (("spec_version", "INTEGER NOT NULL DEFAULT 0"),),
    "telemetry": (("attempt", "INTEGER"),),
}
"""Columns a schema-1 store lacks. Its trials keep spec version 0, so the first sweep with this
tunescout supersedes them: their ids hashed only part of the config that made them. Schema 3
added the ``decisions`` table, which the schema script creates on any writable open."""

TELEMETRY_FIELDS = ("step", "samples", "tokens", "loss", "grad_norm", "lr", "tokens_per_s", "wall_s", "val_loss",
                    "phase")


def _connect(path: str | Path, readonly: bool) -> sqlite3.Connection:
    if str(path) == ":memory:":
        if readonly:
            raise StoreError("an in-memory store cannot be opened read-only (it would be empty)")
        return sqlite3.connect(":memory:", isolation_level=None)
    path = Path(path)
    if readonly:
        if not path.is_file():
            raise StoreError(f"no study store at {path}")
        uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
        return sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    return sqlite3.connect(path, timeout=30, isolation_level=None)


class SQLiteStore:
    """A study store in one SQLite file (or in memory). Use :func:`tunescout.study.store.open_store`."""

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = path if str(path) == ":memory:" else Path(path)
        self.readonly = readonly
        self.db = _connect(path, readonly)
        try:
            self.db.row_factory = sqlite3.Row
            self._check_or_create()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise StoreError(f"{path}: not a tunescout study store ({exc})") from None
        except BaseException:
            self.db.close()
            raise

    def _check_or_create(self) -> None:
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "meta" not in tables:
            raise StoreError(f"{self.path}: not a tunescout study store (an SQLite file with other tables)")
        if not tables and self.readonly:
            raise StoreError(f"{self.path}: not a tunescout study store (empty file; run `tunescout sweep` first)")
        if not self.readonly:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)  # idempotent: CREATE ... IF NOT EXISTS
        row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        version = int(row[0]) if row else None
        if version is not None and version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: schema version {version}, this tunescout reads up to {SCHEMA_VERSION}")
        if version == SCHEMA_VERSION:
            return
        if self.readonly:
            raise StoreError(f"{self.path}: schema version {version}, written by an older tunescout; run "
                             "`tunescout sweep` on its study once to upgrade it")
        with self._tx():
            for table, columns in _ADDED_IN_V2.items():
                have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
                for name, decl in columns:
                    if name not in have:
                        self.db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def _tx(self) -> "_Transaction":
        if self.readonly:
            raise StoreError(f"{self.path}: opened read-only")
        return _Transaction(self.db)

    def close(self) -> None:
        """Close the connection (the file stays consistent: every change was a committed transaction)."""
        self.db.close()

    def __enter__(self) -> "SQLiteStore":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close()

    # --- writing (driver only) ---

    def sync_trials(self, study: str, spec: dict[str, Any], trials: Iterable[dict[str, Any]]) -> SyncResult:
        trials = list(trials)
        trial_set = hashlib.sha1("\n".join(sorted(t["trial_id"] for t in trials)).encode()).hexdigest()
        spec_json = json.dumps(spec, default=str)
        with self._tx():
            row = self.db.execute("SELECT version, trial_set FROM studies WHERE name=?", (study,)).fetchone()
            if row is None:
                version = 1
                self.db.execute("INSERT INTO studies (name, spec, created_at, version, trial_set) VALUES (?,?,?,?,?)",
                                (study, spec_json, time.time(), version, trial_set))
            else:
                version = row["version"] + (row["trial_set"] != trial_set)
                self.db.execute("UPDATE studies SET spec=?, version=?, trial_set=? WHERE name=?",
                                (spec_json, version, trial_set, study))
            new = 0
            for t in trials:
                owner = self.db.execute("SELECT study FROM trials WHERE trial_id=?", (t["trial_id"],)).fetchone()
                if owner is not None and owner[0] != study:
                    raise StoreError(f"trial {t['trial_id']} belongs to study {owner[0]!r}, not {study!r}")
                new += self.db.execute(
                    "INSERT OR IGNORE INTO trials (trial_id, study, model, method, dataset, hparams, seed, config,"
                    " planned_samples, planned_tokens, run_dir, spec_version) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (t["trial_id"], study, t["model"], t["method"], t["dataset"], json.dumps(t["hparams"]),
                     t["seed"], json.dumps(t["config"]), t.get("planned_samples"), t.get("planned_tokens"),
                     t.get("run_dir"), version),
                ).rowcount
                # A kept trial is the same configuration (its id hashes it) but takes the current
                # grid's name for it: a trial kept when an axis is added (lora.r, at the value it
                # had as a fixed setting) must carry that axis, or rankings see two configurations.
                self.db.execute("UPDATE trials SET spec_version=?, hparams=? WHERE trial_id=?",
                                (version, json.dumps(t["hparams"]), t["trial_id"]))
            superseded = self.db.execute("SELECT COUNT(*) FROM trials WHERE study=? AND spec_version<?",
                                         (study, version)).fetchone()[0]
            newly = 0
            if row is not None and version > row["version"]:  # left behind: current until this sync
                newly = self.db.execute("SELECT COUNT(*) FROM trials WHERE study=? AND spec_version=?",
                                        (study, row["version"])).fetchone()[0]
        return SyncResult(new=new, kept=len(trials) - new, superseded=superseded, newly_superseded=newly,
                          version=version)

    def requeue_running(self, study: str) -> list[str]:
        with self._tx():
            ids = [r[0] for r in self.db.execute(
                "SELECT trial_id FROM trials WHERE status='running' AND study=? ORDER BY rowid", (study,))]
            self.db.execute("UPDATE trials SET status='pending' WHERE status='running' AND study=?", (study,))
        return ids

    def reopen_stopped(self, study: str) -> list[str]:
        where, args = self._where(study, False)
        with self._tx():
            ids = [r[0] for r in self.db.execute(
                f"SELECT trial_id FROM trials t WHERE {where} AND status IN ('stopped', 'paused') ORDER BY rowid", args)]
            self.db.executemany("UPDATE trials SET status='pending', reason='', finished_at=NULL WHERE trial_id=?",
                                [(t,) for t in ids])
            self.db.execute(f"DELETE FROM decisions WHERE trial_id IN (SELECT trial_id FROM trials t WHERE {where})",
                            args)  # the old rule's decisions
        return ids

    def requeue_failed(self, study: str) -> list[str]:
        where, args = self._where(study, False)
        with self._tx():
            ids = [r[0] for r in self.db.execute(
                f"SELECT trial_id FROM trials t WHERE {where} AND status = 'failed' ORDER BY rowid", args)]
            self.db.executemany("UPDATE trials SET status='pending', reason='retried; it had failed: ' || reason, "
                                "finished_at=NULL WHERE trial_id=?", [(t,) for t in ids])
        return ids

    def _transition(self, trial_id: str, to: str) -> sqlite3.Row:
        row = self.db.execute("SELECT status, attempts FROM trials WHERE trial_id=?", (trial_id,)).fetchone()
        if row is None:
            raise StoreError(f"no trial {trial_id} in {self.path}")
        if to not in TRANSITIONS.get(row["status"], ()):
            raise StoreError(f"trial {trial_id}: {row['status']} -> {to} is not an allowed transition")
        return row

    def mark_running(self, trial_id: str) -> int:
        with self._tx():
            attempt = self._transition(trial_id, "running")["attempts"] + 1
            self.db.execute(
                "UPDATE trials SET status='running', attempts=?, started_at=COALESCE(started_at, ?) WHERE trial_id=?",
                (attempt, time.time(), trial_id))
        return attempt

    def retry(self, trial_id: str, reason: str) -> None:
        with self._tx():
            self._transition(trial_id, "pending")
            self.db.execute("UPDATE trials SET status='pending', reason=? WHERE trial_id=?",
                            (f"retrying after: {reason}", trial_id))

    def add_telemetry(self, trial_id: str, record: dict[str, Any]) -> None:
        with self._tx():
            row = self.db.execute("SELECT status, attempts FROM trials WHERE trial_id=?", (trial_id,)).fetchone()
            if row is None or row["status"] != "running":
                raise StoreError(f"trial {trial_id}: telemetry for a trial that is not running")
            self.db.execute(
                f"INSERT OR REPLACE INTO telemetry (trial_id, {', '.join(TELEMETRY_FIELDS)}, attempt) "
                f"VALUES (?{', ?' * len(TELEMETRY_FIELDS)}, ?)",
                (trial_id, *(record.get(k) for k in TELEMETRY_FIELDS), row["attempts"]),
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
        if status not in FINISHED:
            raise StoreError(f"not a final status: {status!r}")
        totals = totals or {}
        with self._tx():
            self._transition(trial_id, status)
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

    def pause(self, trial_id: str, reason: str = "", totals: dict[str, Any] | None = None) -> None:
        totals = totals or {}
        with self._tx():
            self._transition(trial_id, "paused")
            self.db.execute(
                "UPDATE trials SET status='paused', reason=?, steps=COALESCE(?, steps), samples=COALESCE(?, samples),"
                " tokens=COALESCE(?, tokens), wall_s=COALESCE(?, wall_s) WHERE trial_id=?",
                (reason, totals.get("steps"), totals.get("samples"), totals.get("tokens"), totals.get("wall_s"),
                 trial_id))

    def decide_rung(self, rung: int, decisions: Sequence[dict[str, Any]], resume: Iterable[str]) -> None:
        resume = set(resume)
        now = time.time()
        with self._tx():
            for d in decisions:
                tid, reason = d["trial_id"], d.get("reason")
                row = self.db.execute("SELECT status FROM trials WHERE trial_id=?", (tid,)).fetchone()
                if row is None or row["status"] != "paused":
                    raise StoreError(f"trial {tid}: a rung decision for a trial that is not paused")
                if self.db.execute("SELECT 1 FROM decisions WHERE trial_id=? AND rung=?", (tid, rung)).fetchone():
                    raise StoreError(f"trial {tid}: rung {rung} is already decided")
                self.db.execute("INSERT INTO decisions VALUES (?,?,?,?,?,?,?)",
                                (tid, rung, d["rank"], d["n"], int(reason is None), reason or "", now))
                if reason is not None:
                    self.db.execute("UPDATE trials SET status='stopped', reason=?, finished_at=? WHERE trial_id=?",
                                    (reason, now, tid))
                elif tid in resume:
                    self.db.execute("UPDATE trials SET status='pending', reason='' WHERE trial_id=?", (tid,))

    def decisions(self, study: str | None = None) -> list[dict[str, Any]]:
        where, args = self._where(study, False)
        rows = [dict(r) for r in self.db.execute(
            f"SELECT x.* FROM decisions x JOIN trials t ON t.trial_id = x.trial_id WHERE {where} "
            "ORDER BY x.rung, x.decided_at, x.rank", args)]
        for r in rows:
            r["kept"] = bool(r["kept"])
        return rows

    def add_elapsed(self, study: str, seconds: float) -> None:
        with self._tx():
            self.db.execute("UPDATE studies SET elapsed_s = elapsed_s + ? WHERE name=?", (seconds, study))

    # --- reading ---

    def studies(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM studies ORDER BY created_at, name")]

    def _name(self, study: str | None) -> str | None:
        """The study a query is about: the one named (which must exist), or the store's only one."""
        names = self.studies()
        if study is not None:
            if study not in names:
                raise StoreError(f"{self.path}: no study {study!r} (studies: {', '.join(names) or 'none'})")
            return study
        if len(names) > 1:
            raise StoreError(f"{self.path} holds several studies ({', '.join(names)}); name one (--study)")
        return names[0] if names else None

    def study(self, name: str | None = None) -> dict[str, Any] | None:
        name = self._name(name)
        row = self.db.execute("SELECT * FROM studies WHERE name=?", (name,)).fetchone()
        return dict(row) if row else None

    def study_spec(self, name: str | None = None) -> dict[str, Any] | None:
        study = self.study(name)
        return json.loads(study["spec"]) if study else None

    def _where(self, study: str | None, all_versions: bool, alias: str = "t") -> tuple[str, tuple]:
        name = self._name(study)
        clause = f"{alias}.study = ?"
        if not all_versions:
            clause += f" AND {alias}.spec_version = (SELECT version FROM studies WHERE name = {alias}.study)"
        return clause, (name,)

    def trials(self, study: str | None = None, *, status: str | Sequence[str] | None = None,
               all_versions: bool = False) -> list[dict[str, Any]]:
        where, args = self._where(study, all_versions)
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            where += f" AND t.status IN ({','.join('?' * len(wanted))})"
            args += tuple(wanted)
        rows = [dict(r) for r in self.db.execute(
            "SELECT t.*, t.spec_version < s.version AS superseded FROM trials t JOIN studies s ON s.name = t.study "
            f"WHERE {where} ORDER BY t.rowid", args)]
        for r in rows:
            r["hparams"], r["config"], r["superseded"] = json.loads(r["hparams"]), json.loads(r["config"]), \
                bool(r["superseded"])
        return rows

    def _joined(self, table: str, order: str, trial_id: str | None, study: str | None,
                all_versions: bool) -> list[dict[str, Any]]:
        if trial_id is not None and study is None:  # an id names one trial in any study
            where, args = "x.trial_id = ?", (trial_id,)
        else:
            where, args = self._where(study, all_versions)
            if trial_id is not None:
                where, args = where + " AND x.trial_id = ?", args + (trial_id,)
        return [dict(r) for r in self.db.execute(
            f"SELECT x.* FROM {table} x JOIN trials t ON t.trial_id = x.trial_id WHERE {where} "
            f"ORDER BY x.trial_id, {order}", args)]

    def telemetry(self, trial_id: str | None = None, study: str | None = None,
                  all_versions: bool = False) -> list[dict[str, Any]]:
        return self._joined("telemetry", "x.step", trial_id, study, all_versions)

    def results(self, trial_id: str | None = None, study: str | None = None,
                all_versions: bool = False) -> list[dict[str, Any]]:
        return self._joined("results", "x.name, x.samples", trial_id, study, all_versions)

    def counts(self, study: str | None = None, all_versions: bool = False) -> dict[str, int]:
        counts = {s: 0 for s in STATUSES}
        where, args = self._where(study, all_versions)
        for status, n in self.db.execute(f"SELECT status, COUNT(*) FROM trials t WHERE {where} GROUP BY status", args):
            counts[status] = n
        return counts

    def tokens_trained(self, study: str | None = None) -> int:
        where, args = self._where(study, False)
        return int(self.db.execute(f"SELECT COALESCE(SUM(tokens), 0) FROM trials t WHERE {where}", args).fetchone()[0])


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
