"""Sweeps for real on the tiny model: early stopping, status/export, faults, budget, kill and resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tunescout.cli import main
from tunescout.demo.tasks import make_rows, write_jsonl
from tunescout.study.spec import load_study
from tunescout.study.store import Store
from tunescout.study.sweep import run_sweep


FIXED = "{epochs: 1, max_length: 64, max_tokens_per_micro_batch: 256, checkpoint_every: 1}"


def _write_study(root: Path, model: Path | str, grid: str, extra: str = "", models: str | None = None,
                 fixed: str = FIXED) -> Path:
    for task in ("sentiment", "arithmetic"):
        write_jsonl(make_rows(task, 32, seed=0), root / f"{task}_train.jsonl")
        write_jsonl(make_rows(task, 8, seed=1), root / f"{task}_eval.jsonl")
    path = root / "study.yaml"
    path.write_text(
        f"name: test-study\nmodels: {models or f'[{model}]'}\nmethods: [full]\n"
        "datasets:\n"
        "  - {name: sentiment, train: sentiment_train.jsonl, eval: sentiment_eval.jsonl, metric: accuracy, max_new_tokens: 3}\n"
        "  - {name: arithmetic, train: arithmetic_train.jsonl, eval: arithmetic_eval.jsonl, metric: exact_match, max_new_tokens: 3}\n"
        f"grid:\n{grid}"
        f"fixed: {fixed}\n" + extra
    )
    return path


GRID12 = "  learning_rate: [1.0e-4, 1.0e-3, 3.0e-3]\n  batch_size: [4, 8]\n"


@pytest.fixture(scope="module")
def finished_study(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study")
    path = _write_study(root, tiny_model_dir, GRID12, "stopping: {rule: dynamics, rungs: [0.3], eta: 2}\n")
    counts = run_sweep(load_study(path))
    assert sum(counts.values()) == 12
    return path


def test_sweep_runs_every_trial_and_dynamics_stops_some(finished_study: Path) -> None:
    store = Store(finished_study.parent / "test-study.db")
    counts = store.counts()
    assert counts["stopped"] >= 2 and counts["completed"] >= 4
    assert counts["completed"] + counts["stopped"] == 12
    for t in store.trials("stopped"):
        assert t["reason"].startswith("dynamics rung 1") and 0 < t["samples"] < t["planned_samples"]
        assert len(store.telemetry(t["trial_id"])) == t["steps"]  # stopped runs keep their telemetry
    for t in store.trials("completed"):
        assert t["samples"] == t["planned_samples"]
        names = {r["name"] for r in store.results(t["trial_id"])}
        assert {"val_loss"} < names and names & {"accuracy", "exact_match"}


def test_status_json_and_export(finished_study: Path, capsys, tmp_path: Path) -> None:
    db = str(finished_study.parent / "test-study.db")
    assert main(["status", db, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert sum(status["counts"].values()) == 12 and len(status["trials"]) == 12
    first = status["trials"][0]
    assert {"trial_id", "status", "config", "started_at", "finished_at", "samples", "tokens", "score"} <= set(first)
    assert all(t["score"] is not None for t in status["trials"])
    assert main(["export", db, "-o", str(tmp_path / "out")]) == 0
    trials = pd.read_parquet(tmp_path / "out" / "trials.parquet")
    telemetry = pd.read_csv(tmp_path / "out" / "telemetry.csv")
    assert len(trials) == 12 and {"hp.learning_rate", "hp.batch_size", "status"} <= set(trials.columns)
    assert set(telemetry["trial_id"]) == set(trials["trial_id"])
    steps = telemetry.groupby("trial_id").size().to_dict()
    assert steps == trials.set_index("trial_id")["steps"].to_dict()


def test_rerun_of_a_finished_study_runs_nothing(finished_study: Path) -> None:
    before = Store(finished_study.parent / "test-study.db").trials()
    run_sweep(load_study(finished_study))
    after = Store(finished_study.parent / "test-study.db").trials()
    assert [(t["trial_id"], t["finished_at"], t["attempts"]) for t in before] == \
           [(t["trial_id"], t["finished_at"], t["attempts"]) for t in after]


def test_dry_run_prints_plan(finished_study: Path, capsys) -> None:
    assert main(["sweep", str(finished_study), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "12 trials" in out and "tokens planned" in out and "learning_rate" in out


def test_divergence_and_failing_trials_are_recorded_and_the_sweep_goes_on(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    for weights in broken.glob("*.safetensors"):
        weights.write_bytes(b"not a safetensors file")
    path = _write_study(tmp_path, tiny_model_dir, "  learning_rate: [1.0e-3, 1.0e+12]\n",
                        models=f"[{tiny_model_dir}, {broken}]",
                        fixed="{epochs: 3, batch_size: 8, max_length: 64, max_tokens_per_micro_batch: 256, grad_clip: null}")
    spec = load_study(path)
    spec.datasets = spec.datasets[:1]
    run_sweep(spec)
    store = Store(spec.store)
    by = {(Path(t["model"]).name, t["hparams"]["learning_rate"]): t for t in store.trials()}
    assert by[(tiny_model_dir.name, 1e-3)]["status"] == "completed"
    assert by[(tiny_model_dir.name, 1e12)]["status"] == "diverged"
    assert "non-finite" in by[(tiny_model_dir.name, 1e12)]["reason"]
    for lr in (1e-3, 1e12):
        assert by[("broken-model", lr)]["status"] == "failed" and by[("broken-model", lr)]["reason"]


def test_budget_stops_launching(tiny_model_dir: Path, tmp_path: Path) -> None:
    path = _write_study(tmp_path, tiny_model_dir, "  learning_rate: [1.0e-4, 1.0e-3, 3.0e-3]\n", "budget: {tokens: 1}\n")
    spec = load_study(path)
    spec.datasets = spec.datasets[:1]
    messages: list[str] = []
    counts = run_sweep(spec, on_event=messages.append)
    assert counts["completed"] == 1 and counts["pending"] == 2
    assert any("token budget reached" in m for m in messages)


def _completed(db: Path) -> list[tuple]:
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute("SELECT trial_id, finished_at FROM trials WHERE status='completed'").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def test_sigkill_of_the_driver_then_resume(tiny_model_dir: Path, tmp_path: Path) -> None:
    path = _write_study(tmp_path, tiny_model_dir, "  learning_rate: [1.0e-4, 1.0e-3, 3.0e-3]\n")
    db = tmp_path / "test-study.db"
    proc = subprocess.Popen([sys.executable, "-m", "tunescout.cli", "sweep", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    deadline = time.time() + 240
    while len(_completed(db)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = dict(_completed(db))
    assert 2 <= len(done_before) < 6, "the kill should land mid-study"

    counts = run_sweep(load_study(path))
    assert counts["completed"] == 6 and counts["pending"] == counts["running"] == 0
    store = Store(db)
    for t in store.trials():
        if t["trial_id"] in done_before:  # finished trials are neither lost nor rerun
            assert t["finished_at"] == done_before[t["trial_id"]] and t["attempts"] == 1
        steps = [r["step"] for r in store.telemetry(t["trial_id"])]
        assert steps == list(range(1, t["steps"] + 1))  # no step lost or repeated
        assert t["samples"] == t["planned_samples"]


def test_rank_analyze_and_recommend_on_the_study(finished_study: Path, capsys) -> None:
    db = str(finished_study.parent / "test-study.db")
    assert main(["rank", db, "--json", "--validate", "--ks", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["ranking"]) == 6 and doc["validation"]
    assert main(["analyze", db, "--json", "--boot", "50"]) == 0
    analysis = json.loads(capsys.readouterr().out)
    assert {"dynamics", "stopping_replay", "batch_lr", "stacked_vs_phased"} <= set(analysis)
    assert any(row["replayable"] for row in analysis["stopping_replay"])
    assert len(analysis["batch_lr"]) > 0
    assert main(["recommend", "--from", db, "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("# rank") == 2 and "learning_rate" in out
