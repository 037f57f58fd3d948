"""Fault injection: a small sweep killed at random moments, a full disk under its store and under
its run directories, a damaged checkpoint and a damaged store page. Each must end with every trial
recorded once, under its own id and status, and with the same totals and scores as a run that
was never interrupted (resumes are exact, so the scores are equal, not close)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from procs import query

from tunescout.demo.tasks import make_rows, write_jsonl
from tunescout.study.spec import load_study
from tunescout.study.store import open_store
from tunescout.study.sweep import run_sweep

FIXED = "{max_steps: 12, batch_size: 4, max_length: 64, max_tokens_per_micro_batch: 256, checkpoint_every: 3}"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def _study(root: Path, model: Path, storage: str | None = None, store: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(make_rows("sentiment", 32, seed=0), root / "train.jsonl")
    write_jsonl(make_rows("sentiment", 6, seed=1), root / "eval.jsonl")
    path = root / "study.yaml"
    path.write_text(
        f"name: faults\nmodels: [{model}]\nmethods: [full, lora]\n"
        "datasets: [{name: d, train: train.jsonl, eval: eval.jsonl, metric: accuracy, max_new_tokens: 3}]\n"
        "grid: {learning_rate: [1.0e-3, 3.0e-3]}\n"
        f"fixed: {FIXED}\n"
        + (f"storage: {storage}\n" if storage else "") + (f"store: {store}\n" if store else ""))
    return path


def _outcome(db: Path) -> dict[str, tuple]:
    """Per trial: status, attempts-independent totals, final scores, and whether its step records
    run 1..N once each (none lost, none repeated)."""
    with open_store(db, readonly=True) as store:
        out = {}
        for t in store.trials():
            steps = [r["step"] for r in store.telemetry(t["trial_id"])]
            final = {r["name"]: r["value"] for r in store.results(t["trial_id"]) if r["samples"] == t["samples"]}
            out[t["trial_id"]] = (t["status"], t["steps"], t["samples"], t["tokens"], t["planned_samples"],
                                  steps == list(range(1, len(steps) + 1)), tuple(sorted(final.items())))
    return out


@pytest.fixture(scope="module")
def reference_study(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The study run once, never interrupted: its folder (YAML, data, store and runs)."""
    path = _study(tmp_path_factory.mktemp("reference"), tiny_model_dir)
    assert run_sweep(load_study(path))["completed"] == 4
    return path.parent


@pytest.fixture(scope="module")
def reference(reference_study: Path) -> dict[str, tuple]:
    outcome = _outcome(reference_study / "faults.db")
    assert all(o[0] == "completed" and o[1] == 12 and o[5] for o in outcome.values())
    return outcome


def _sweep(path: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tunescout.cli", "sweep", str(path), *flags],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)


def test_random_sigkills_lose_repeat_and_mix_nothing(tiny_model_dir, tmp_path, reference) -> None:
    """Six SIGKILLs of the driver at seeded random moments (while it plans, syncs the store,
    launches, trains, checkpoints or evaluates), then a run to the end."""
    path = _study(tmp_path / "s", tiny_model_dir)
    rng = random.Random(20261206)
    for _ in range(6):
        proc = _sweep(path)
        time.sleep(rng.uniform(2.0, 9.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert run_sweep(load_study(path))["completed"] == 4
    assert _outcome(tmp_path / "s" / "faults.db") == reference


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


needs_mounts = pytest.mark.skipif(not _unshare_works(), reason="needs `unshare -rm` to mount a small tmpfs")


def _in_small_disk(script: str, mount: Path, size: str = "4m") -> subprocess.CompletedProcess:
    """Run ``script`` (sh) in a private mount namespace where ``mount`` is a ``size`` tmpfs: a real
    full disk (ENOSPC from the kernel), for this script only."""
    mount.mkdir(parents=True, exist_ok=True)
    full = f"set -u; mount -t tmpfs -o size={size} tmpfs {mount}; {script}"
    return subprocess.run(["unshare", "-rm", "sh", "-c", full], capture_output=True, text=True, env=ENV,
                          timeout=600)


def _fill(mount: Path, leave_kib: int) -> str:
    """Shell that fills ``mount`` up to ``leave_kib`` KiB of free space."""
    return (f"avail=$(df -k --output=avail {mount} | tail -1); "
            f"dd if=/dev/zero of={mount}/filler bs=1k count=$((avail - {leave_kib})) 2>/dev/null; ")


@needs_mounts
def test_a_full_disk_under_the_runs_fails_trials_clearly_and_retry_finishes_them(tiny_model_dir, tmp_path,
                                                                                   reference) -> None:
    root, disk = tmp_path / "s", tmp_path / "disk"
    path = _study(root, tiny_model_dir, storage=str(disk / "runs"))
    sweep = f"{sys.executable} -m tunescout.cli sweep {path}"
    result = _in_small_disk(
        _fill(disk, 700) + f"{sweep}; echo rc1=$?; rm {disk}/filler; {sweep} --retry-failed; echo rc2=$?",
        disk, size="64m")
    assert "rc1=1" in result.stdout, result.stdout + result.stderr
    assert "No space left on device" in result.stderr and "--retry-failed" in result.stderr
    assert "rc2=0" in result.stdout, result.stderr
    assert "Traceback" not in result.stderr
    assert _outcome(root / "faults.db") == reference


@needs_mounts
def test_a_full_disk_under_the_store_stops_the_sweep_clearly_and_a_rerun_finishes(tiny_model_dir, tmp_path,
                                                                                 reference) -> None:
    root, disk = tmp_path / "s", tmp_path / "disk"
    path = _study(root, tiny_model_dir, store=str(disk / "faults.db"), storage=str(root / "runs"))
    sweep = f"{sys.executable} -m tunescout.cli sweep {path}"
    result = _in_small_disk(
        _fill(disk, 160) + f"{sweep}; echo rc1=$?; rm {disk}/filler; {sweep}; echo rc2=$?; "
        f"cp {disk}/faults.db {root}/faults.db",
        disk, size="16m")
    assert "rc1=1" in result.stdout and "no space left" in result.stderr, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "rc2=0" in result.stdout, result.stderr
    assert _outcome(root / "faults.db") == reference


def test_a_damaged_store_page_is_refused_and_nothing_trains(reference_study, tmp_path) -> None:
    shutil.copytree(reference_study, tmp_path / "s")
    path, db = tmp_path / "s" / "study.yaml", tmp_path / "s" / "faults.db"
    with sqlite3.connect(db) as con:
        page = con.execute("PRAGMA page_size").fetchone()[0]
        root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'telemetry'").fetchone()[0]
    data = bytearray(db.read_bytes())
    data[(root - 1) * page: root * page] = b"\x00\xff" * (page // 2)
    db.write_bytes(bytes(data))
    runs = sorted(p.stat().st_mtime for p in (tmp_path / "s").rglob("*") if p.is_file() and "runs" in str(p))
    proc = _sweep(path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "cannot be read" in err and "Traceback" not in err, err
    assert runs == sorted(p.stat().st_mtime for p in (tmp_path / "s").rglob("*") if p.is_file() and "runs" in str(p))


def test_a_damaged_checkpoint_starts_over_and_says_so(tiny_model_dir, tmp_path, reference) -> None:
    """The driver dies while a trial has a checkpoint; the checkpoint is then damaged (a torn
    weights file). The next sweep cannot load it: the trial starts over from scratch, with that in
    its reason, and ends exactly where the uninterrupted run did."""
    path = _study(tmp_path / "s", tiny_model_dir)
    db = tmp_path / "s" / "faults.db"
    proc = _sweep(path)
    deadline, at = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None:
        rows = query(db, "SELECT t.trial_id, t.run_dir, MAX(x.step) FROM trials t JOIN telemetry x "
                          "USING (trial_id) WHERE t.status='running' GROUP BY t.trial_id")
        if rows and rows[0][2] >= 7:
            at = rows[0]
            break
        time.sleep(0.05)
    assert at is not None, "no trial got past its second checkpoint"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    trial_id, run_dir, _ = at
    weights = max(Path(run_dir, "checkpoints").glob("step-*/trainable.pt"))
    weights.write_bytes(weights.read_bytes()[:100])
    assert run_sweep(load_study(path))["completed"] == 4
    assert _outcome(db) == reference
    with open_store(db, readonly=True) as store:
        trial = next(t for t in store.trials() if t["trial_id"] == trial_id)
    assert "did not load" in trial["reason"] and "started over" in trial["reason"], trial["reason"]


def test_a_script_without_the_main_guard_is_told_why_its_trials_die(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Each trial process imports the script that started the sweep; without the guard that import
    starts another sweep and the trial dies before a word. The failure says so."""
    study = _study(tmp_path, tiny_model_dir)
    script = tmp_path / "my_sweep.py"
    script.write_text("import sys\nfrom tunescout.study.spec import load_study\nfrom tunescout.study.sweep import run_sweep\n"
                      "run_sweep(load_study(sys.argv[1]), workers=1)\n")
    subprocess.run([sys.executable, str(script), str(study)], env=ENV, capture_output=True, timeout=600)
    with open_store(tmp_path / "faults.db", readonly=True) as store:
        reasons = {t["reason"] for t in store.trials()}
    assert reasons and all("my_sweep.py" in r and 'if __name__ == "__main__":' in r for r in reasons), reasons
