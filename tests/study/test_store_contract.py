"""The store contract, one suite over every backend (SQLite file, SQLite in memory), in the manner
of Optuna's storage tests; then what only a file can show (read-only opening, refusals, upgrade)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tunescout.study.export import export_store
from tunescout.study.store import FINISHED, SCHEMA_VERSION, STATUSES, StoreError, open_store

BACKENDS = ["sqlite-file", "sqlite-memory"]


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path: Path):
    s = open_store(tmp_path / "s.db" if request.param == "sqlite-file" else ":memory:")
    yield s
    s.close()


def _row(tid: str, **kw) -> dict:
    return {"trial_id": tid, "model": "m", "method": "full", "dataset": "a", "hparams": {"lr": 1}, "seed": 0,
            "config": {"x": 1}, "planned_samples": 100, "planned_tokens": 1000, **kw}


SPEC = {"name": "demo", "datasets": [{"name": "a", "metric": "exact_match"}]}


def test_lifecycle_and_resume_rewrites(store) -> None:
    sync = store.sync_trials("demo", SPEC, [_row("t1"), _row("t2")])
    assert (sync.new, sync.kept, sync.superseded, sync.newly_superseded, sync.version) == (2, 0, 0, 0, 1)
    assert store.mark_running("t1") == 1
    for step in (1, 2, 3):
        store.add_telemetry("t1", {"step": step, "samples": 8 * step, "tokens": 80 * step, "loss": 1.0})
    store.requeue_running("demo")  # the driver died; the trial resumes as attempt 2 and redoes step 3
    assert store.mark_running("t1") == 2
    store.add_telemetry("t1", {"step": 3, "samples": 24, "tokens": 240, "loss": 0.5, "val_loss": 0.9})
    tel = store.telemetry("t1")
    assert [(r["step"], r["loss"], r["attempt"]) for r in tel] == [(1, 1.0, 1), (2, 1.0, 1), (3, 0.5, 2)]
    store.finish("t1", "completed", metrics={"exact_match": 0.75}, totals={"samples": 24, "tokens": 240})
    results = {(r["name"], r["samples"]): r["value"] for r in store.results("t1")}
    assert results == {("val_loss", 24): 0.9, ("exact_match", 24): 0.75}
    counts = store.counts()
    assert set(counts) == set(STATUSES) and counts["completed"] == 1 and counts["pending"] == 1
    assert store.tokens_trained("demo") == 240
    assert store.study_spec() == SPEC and store.studies() == ["demo"]


@pytest.mark.parametrize(("before", "to"), [("pending", "completed"), ("completed", "running"),
                                            ("completed", "failed"), ("pending", "stopped")])
def test_disallowed_transitions_are_refused(store, before: str, to: str) -> None:
    store.sync_trials("demo", SPEC, [_row("t1")])
    if before == "completed":
        store.mark_running("t1")
        store.finish("t1", "completed")
    with pytest.raises(StoreError, match="not an allowed transition"):
        store.mark_running("t1") if to == "running" else store.finish("t1", to)
    assert store.trials()[0]["status"] == before


def test_final_statuses_and_unknown_trials(store) -> None:
    store.sync_trials("demo", SPEC, [_row("t1")])
    store.mark_running("t1")
    with pytest.raises(StoreError, match="not a final status"):
        store.finish("t1", "running")
    with pytest.raises(StoreError, match="no trial"):
        store.mark_running("nope")
    store.finish("t1", "diverged", "nan")
    with pytest.raises(StoreError, match="not running"):
        store.add_telemetry("t1", {"step": 9, "samples": 1, "tokens": 1})
    assert "diverged" in FINISHED


def test_spec_versions_supersede_and_restore(store) -> None:
    store.sync_trials("demo", SPEC, [_row("t1"), _row("t2")])
    store.mark_running("t1")
    store.add_telemetry("t1", {"step": 1, "samples": 8, "tokens": 80, "val_loss": 1.0})
    store.finish("t1", "completed", metrics={"exact_match": 0.5})
    again = store.sync_trials("demo", SPEC, [_row("t1"), _row("t2")])  # the same spec: nothing changes
    assert (again.new, again.kept, again.superseded, again.version) == (0, 2, 0, 1)

    changed = store.sync_trials("demo", {**SPEC, "fixed": {"epochs": 2}}, [_row("t2"), _row("t3")])
    assert (changed.new, changed.kept, changed.superseded, changed.newly_superseded, changed.version) == (1, 1, 1, 1, 2)
    assert [t["trial_id"] for t in store.trials()] == ["t2", "t3"]
    assert store.telemetry() == [] and store.results() == []  # t1's results are not reported any more
    assert store.counts()["completed"] == 0 and store.tokens_trained("demo") == 0
    every = store.trials(all_versions=True)
    assert [(t["trial_id"], t["superseded"]) for t in every] == [("t1", True), ("t2", False), ("t3", False)]
    assert len(store.results(all_versions=True)) == 2 and store.counts(all_versions=True)["completed"] == 1

    back = store.sync_trials("demo", SPEC, [_row("t1"), _row("t2")])  # back to the first spec: t1 counts again
    assert (back.new, back.superseded, back.newly_superseded, back.version) == (0, 1, 1, 3)
    assert store.sync_trials("demo", SPEC, [_row("t1"), _row("t2")]).newly_superseded == 0
    assert {t["trial_id"] for t in store.trials()} == {"t1", "t2"} and store.counts()["completed"] == 1


def test_a_kept_trial_takes_the_grid_name_of_the_new_spec(store) -> None:
    """A grid gains an axis at the value a fixed setting had: the trial at that value is kept (the
    same configuration), and named by the new axis too, as every new trial is."""
    store.sync_trials("demo", SPEC, [_row("t1", hparams={"lr": 1})])
    store.mark_running("t1")
    store.finish("t1", "completed", metrics={"exact_match": 0.5})
    grown = store.sync_trials("demo", {**SPEC, "grid": {"lr": [1], "r": [16, 64]}},
                              [_row("t1", hparams={"lr": 1, "r": 16}), _row("t2", hparams={"lr": 1, "r": 64})])
    assert (grown.new, grown.kept) == (1, 1)
    (kept,) = [t for t in store.trials() if t["trial_id"] == "t1"]
    assert kept["hparams"] == {"lr": 1, "r": 16} and kept["status"] == "completed"


def test_several_studies_are_kept_apart(store) -> None:
    store.sync_trials("one", SPEC, [_row("a1")])
    store.sync_trials("two", {**SPEC, "name": "two"}, [_row("b1"), _row("b2")])
    store.add_elapsed("two", 5.0)
    with pytest.raises(StoreError, match="several studies"):
        store.trials()
    assert [t["trial_id"] for t in store.trials("two")] == ["b1", "b2"]
    assert store.study("two")["elapsed_s"] == 5.0 and store.study("one")["elapsed_s"] == 0.0
    assert store.study_spec("two")["name"] == "two" and store.counts("one")["pending"] == 1
    store.mark_running("b1")
    store.add_telemetry("b1", {"step": 1, "samples": 1, "tokens": 7})
    assert store.tokens_trained("two") == 7 and store.tokens_trained("one") == 0
    assert store.telemetry(study="one") == [] and len(store.telemetry(study="two")) == 1
    with pytest.raises(StoreError, match="no study 'three'"):
        store.counts("three")
    with pytest.raises(StoreError, match="belongs to study 'one'"):
        store.sync_trials("two", SPEC, [_row("a1")])


def test_stopped_trials_reopen_and_resume_as_a_new_attempt(store) -> None:
    store.sync_trials("demo", SPEC, [_row("t1"), _row("t2")])
    for tid, status in (("t1", "stopped"), ("t2", "completed")):
        store.mark_running(tid)
        store.add_telemetry(tid, {"step": 1, "samples": 8, "tokens": 80})
        store.finish(tid, status, "rung 1")
    assert store.reopen_stopped("demo") == ["t1"]
    t1, t2 = store.trials()
    assert (t1["status"], t1["reason"], t1["finished_at"]) == ("pending", "", None) and t2["status"] == "completed"
    assert store.mark_running("t1") == 2 and len(store.telemetry("t1")) == 1  # its records are kept


def test_a_failed_attempt_is_retried_as_a_new_attempt_with_its_reason(store) -> None:
    store.sync_trials("demo", SPEC, [_row("t1"), _row("t2")])
    store.mark_running("t1")
    store.add_telemetry("t1", {"step": 1, "samples": 8, "tokens": 80})
    store.retry("t1", "WorkerCrashedError: node lost")
    t1 = store.trials(status="pending")[0]
    assert (t1["trial_id"], t1["reason"]) == ("t1", "retrying after: WorkerCrashedError: node lost")
    assert store.mark_running("t1") == 2 and len(store.telemetry("t1")) == 1
    with pytest.raises(StoreError, match="not an allowed transition"):
        store.retry("t2", "never ran")  # only a running trial is retried


def test_pause_and_rung_decisions(store) -> None:
    store.sync_trials("demo", SPEC, [_row("t1"), _row("t2"), _row("t3")])
    for tid in ("t1", "t2", "t3"):
        store.mark_running(tid)
        store.add_telemetry(tid, {"step": 1, "samples": 25, "tokens": 250})
        store.pause(tid, "waiting at rung 1", {"samples": 25, "tokens": 250})
    assert store.counts()["paused"] == 3
    rows = [{"trial_id": "t2", "rank": 1, "n": 3, "reason": None}, {"trial_id": "t3", "rank": 2, "n": 3, "reason": None},
            {"trial_id": "t1", "rank": 3, "n": 3, "reason": "rank 3 of 3"}]
    store.decide_rung(1, rows, resume={"t2"})  # t3 kept but already past the next rung: stays paused
    status = {t["trial_id"]: t["status"] for t in store.trials()}
    assert status == {"t1": "stopped", "t2": "pending", "t3": "paused"}
    got = [(d["trial_id"], d["rung"], d["rank"], d["kept"]) for d in store.decisions()]
    assert got == [("t2", 1, 1, True), ("t3", 1, 2, True), ("t1", 1, 3, False)]
    with pytest.raises(StoreError, match="already decided"):
        store.decide_rung(1, [{"trial_id": "t3", "rank": 1, "n": 1, "reason": None}], resume=())
    with pytest.raises(StoreError, match="not paused"):  # and nothing of a refused decision is written
        store.decide_rung(2, [{"trial_id": "t3", "rank": 1, "n": 2, "reason": None},
                              {"trial_id": "t2", "rank": 2, "n": 2, "reason": "x"}], resume=())
    assert len(store.decisions()) == 3 and store.trials()[2]["status"] == "paused"
    with pytest.raises(StoreError, match="not an allowed transition"):
        store.pause("t1")  # stopped
    assert sorted(store.reopen_stopped("demo")) == ["t1", "t3"] and store.decisions() == []


def test_requeue_is_per_study(store) -> None:
    store.sync_trials("one", SPEC, [_row("a1")])
    store.sync_trials("two", SPEC, [_row("b1")])
    store.mark_running("a1")
    store.mark_running("b1")
    assert store.requeue_running("two") == ["b1"]
    assert store.trials("one")[0]["status"] == "running"


# --- what only a file shows ---


def test_readonly_never_creates_and_refuses_writes(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    with pytest.raises(StoreError, match=f"no study store at {missing}"):
        open_store(missing, readonly=True)
    assert not missing.exists()
    with open_store(tmp_path / "s.db") as s:
        s.sync_trials("demo", SPEC, [_row("t1")])
    before = sorted(p.name for p in tmp_path.iterdir())
    with open_store(tmp_path / "s.db", readonly=True) as s:
        assert [t["trial_id"] for t in s.trials()] == ["t1"]
        with pytest.raises(StoreError, match="read-only"):
            s.mark_running("t1")
    with pytest.raises(StoreError, match="cannot be opened read-only"):
        open_store(":memory:", readonly=True)
    # SQLite's WAL readers may leave its -wal/-shm sidecars next to an existing store; nothing else appears
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm"))) == before
    with open_store(tmp_path / "s.db") as s:
        assert s.trials()[0]["status"] == "pending"  # and the store is unchanged


def test_files_that_are_not_stores_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_text("not sqlite at all " * 100)
    for readonly in (True, False):
        with pytest.raises(StoreError, match="not a tunescout study store"):
            open_store(junk, readonly=readonly)
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE users (id INTEGER)")
    db.commit()
    db.close()
    for readonly in (True, False):
        with pytest.raises(StoreError, match="other tables"):
            open_store(other, readonly=readonly)
    db = sqlite3.connect(other)  # and opening it for writing added nothing
    assert [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["users"]
    db.close()
    (tmp_path / "empty.db").touch()
    with pytest.raises(StoreError, match="empty file"):
        open_store(tmp_path / "empty.db", readonly=True)


def test_wal_schema_version_and_newer_stores(tmp_path: Path) -> None:
    open_store(tmp_path / "s.db").close()
    db = sqlite3.connect(tmp_path / "s.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    db.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    db.commit()
    db.close()
    for readonly in (True, False):
        with pytest.raises(StoreError, match="schema version 999"):
            open_store(tmp_path / "s.db", readonly=readonly)


def test_a_schema_1_store_is_upgraded_and_its_trials_superseded(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE studies (name TEXT PRIMARY KEY, spec TEXT NOT NULL, created_at REAL NOT NULL,
                              elapsed_s REAL NOT NULL DEFAULT 0);
        CREATE TABLE trials (trial_id TEXT PRIMARY KEY, study TEXT NOT NULL, model TEXT NOT NULL,
            method TEXT NOT NULL, dataset TEXT NOT NULL, hparams TEXT NOT NULL, seed INTEGER NOT NULL,
            config TEXT NOT NULL, planned_samples INTEGER, planned_tokens INTEGER,
            status TEXT NOT NULL DEFAULT 'pending', reason TEXT NOT NULL DEFAULT '',
            attempts INTEGER NOT NULL DEFAULT 0, started_at REAL, finished_at REAL,
            steps INTEGER NOT NULL DEFAULT 0, samples INTEGER NOT NULL DEFAULT 0, tokens INTEGER NOT NULL DEFAULT 0,
            wall_s REAL NOT NULL DEFAULT 0, run_dir TEXT);
        CREATE TABLE telemetry (trial_id TEXT NOT NULL, step INTEGER NOT NULL, samples INTEGER NOT NULL,
            tokens INTEGER NOT NULL, loss REAL, grad_norm REAL, lr REAL, tokens_per_s REAL, wall_s REAL,
            val_loss REAL, phase INTEGER, PRIMARY KEY (trial_id, step));
        CREATE TABLE results (trial_id TEXT NOT NULL, name TEXT NOT NULL, value REAL, samples INTEGER NOT NULL,
            PRIMARY KEY (trial_id, name, samples));
        INSERT INTO studies VALUES ('demo', '{}', 0, 0);
        INSERT INTO trials (trial_id, study, model, method, dataset, hparams, seed, config, status)
            VALUES ('old1', 'demo', 'm', 'full', 'a', '{}', 0, '{}', 'completed');
    """)
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="older tunescout"):
        open_store(path, readonly=True)
    with open_store(path) as s:
        sync = s.sync_trials("demo", SPEC, [_row("new1")])
        assert (sync.new, sync.superseded) == (1, 1)
        assert [t["trial_id"] for t in s.trials()] == ["new1"]
        assert [t["trial_id"] for t in s.trials(all_versions=True) if t["superseded"]] == ["old1"]


def test_export_is_read_only_and_rejects_unknown_formats(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no study store"):
        export_store(tmp_path / "missing.db", tmp_path / "out")
    assert not (tmp_path / "missing.db").exists()
    with open_store(tmp_path / "s.db") as s:
        s.sync_trials("demo", SPEC, [_row("t1")])
    with pytest.raises(ValueError, match="unknown export format"):
        export_store(tmp_path / "s.db", tmp_path / "out", formats=["csv", "xlsx"])
    assert not (tmp_path / "out").exists()
    written = export_store(tmp_path / "s.db", tmp_path / "out", formats=["csv"])
    assert sorted(p.name for p in written) == ["decisions.csv", "results.csv", "telemetry.csv", "trials.csv"]
