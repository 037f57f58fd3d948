"""Studies on a Ray cluster (a local CPU head started for this module, as `ray start` would on a
real head node): a study completes into the store, a trial whose worker is killed is retried and
resumes from its checkpoint, and a killed driver's study finishes when the sweep is run again."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from procs import alive
from ray_head import ENV

from tunescout.demo.tasks import make_rows, write_jsonl
from tunescout.study.spec import load_study
from tunescout.study.store import open_store
from tunescout.study.sweep import run_sweep

def _study(root: Path, model: Path, address: str, extra: str = "") -> Path:
    write_jsonl(make_rows("sentiment", 48, seed=0), root / "train.jsonl")
    write_jsonl(make_rows("sentiment", 8, seed=1), root / "eval.jsonl")
    path = root / "study.yaml"
    path.write_text(
        f"name: ray-study\nmodels: [{model}]\nmethods: [full]\nstorage: shared/runs\n"
        "datasets:\n  - {name: sentiment, train: train.jsonl, eval: eval.jsonl, metric: accuracy, max_new_tokens: 3}\n"
        "grid:\n  learning_rate: [1.0e-3, 3.0e-3]\n  batch_size: [4, 8]\n"
        "fixed: {epochs: 2, max_length: 64, max_tokens_per_micro_batch: 256, checkpoint_every: 1}\n"
        f"executor: {{name: ray, address: '{address}', cpus_per_trial: 1, max_retries: 1}}\n" + extra)
    return path


def _query(db: Path, sql: str) -> list[tuple]:
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
        try:
            return con.execute(sql).fetchall()
        except sqlite3.OperationalError:  # the driver is still creating it
            return []


def _kill_a_worker_mid_run(db: Path, runs: Path, killed: list) -> None:
    """Kill the process training the first trial seen running with three steps checkpointed."""
    deadline = time.time() + 240
    while time.time() < deadline and not killed:
        for tid, steps in _query(db, "SELECT trial_id, steps FROM trials WHERE status='running'"):
            lock = runs / tid / ".lock"
            if steps >= 3 and lock.exists() and (pid := lock.read_text().strip()).isdigit():
                os.kill(int(pid), signal.SIGKILL)
                killed.append((tid, steps))
                return
        time.sleep(0.05)


def _assert_resumed(db: Path, tid: str, statuses: tuple[str, ...] = ("completed",)) -> None:
    """The trial ended, every step is recorded once, and its second attempt continued from a checkpoint."""
    with open_store(db, readonly=True) as store:
        trial = next(t for t in store.trials() if t["trial_id"] == tid)
        records = store.telemetry(tid)
    assert trial["status"] in statuses and trial["attempts"] >= 2
    assert [r["step"] for r in records] == list(range(1, trial["steps"] + 1))
    first_again = next(r["step"] for r in records if r["attempt"] == 2)
    assert first_again > 1  # continued from its checkpoint, not from the start


def test_a_study_runs_on_ray_and_a_killed_worker_is_retried_from_its_checkpoint(cluster: str, tiny_model_dir: Path,
                                                                                 tmp_path: Path) -> None:
    spec = load_study(_study(tmp_path, tiny_model_dir, cluster))
    assert spec.runs_dir == str(tmp_path / "shared" / "runs")
    killed: list = []
    killer = threading.Thread(target=_kill_a_worker_mid_run, args=(Path(spec.store), Path(spec.runs_dir), killed))
    killer.start()
    messages: list[str] = []
    counts = run_sweep(spec, on_event=messages.append)
    killer.join()
    assert counts["completed"] == 4 and sum(counts.values()) == 4
    assert killed, "no trial was seen running to kill"
    (tid, _), = killed
    assert any(m.startswith(f"retrying {tid} (1 of 1)") for m in messages)
    _assert_resumed(Path(spec.store), tid)
    assert len(list(Path(spec.runs_dir).glob(".tunescout-storage-*"))) == 1


PROMOTE = "stopping: {rule: asha, signal: val_loss, mode: promote, rungs: [0.5], eta: 2}\n"


def test_a_killed_ray_driver_resumes_its_study_mid_promotion(cluster: str, tiny_model_dir: Path,
                                                             tmp_path: Path) -> None:
    """Promote mode on Ray: trials pause at the rung with a checkpoint; the driver is killed while
    some train; the rerun finishes the study, ranks the cohort once and keeps the best half."""
    path = _study(tmp_path, tiny_model_dir, cluster, PROMOTE)
    db = tmp_path / "ray-study.db"
    driver = subprocess.Popen([sys.executable, "-m", "tunescout.cli", "sweep", str(path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + 240
    running: list[str] = []
    while time.time() < deadline and driver.poll() is None:
        running = [t for t, s in _query(db, "SELECT trial_id, steps FROM trials WHERE status='running'") if s >= 3]
        if running:
            break
        time.sleep(0.05)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    assert running, "the driver ended before a trial was running"
    counts = run_sweep(load_study(path))
    assert (counts["completed"], counts["stopped"]) == (2, 2)
    with open_store(db, readonly=True) as store:
        decisions = store.decisions()
    assert len(decisions) == 4 and sum(d["kept"] for d in decisions) == 2
    for tid in running:
        _assert_resumed(db, tid, ("completed", "stopped"))
    assert not alive(driver.pid)


def test_the_cli_flags_choose_the_executor(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    from tunescout.cli import main

    path = _study(tmp_path, tiny_model_dir, "auto")
    assert main(["sweep", str(path), "--executor", "local", "--dry-run"]) == 0  # the ray address goes with ray
    assert "4 trials" in capsys.readouterr().out
    assert main(["sweep", str(path), "--gpus-per-trial", "1.5", "--dry-run"]) != 0
    assert "gpus_per_trial" in capsys.readouterr().err
