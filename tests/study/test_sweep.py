"""Sweeps for real on the tiny model: early stopping, status/export, faults, budget, kill and resume."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from procs import alive, query

from tunescout.cli import main
from tunescout.demo.tasks import make_rows, write_jsonl
from tunescout.study.spec import load_study
from tunescout.study.store import open_store
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


def _store(path: Path):
    return open_store(path, readonly=True)


def test_sweep_runs_every_trial_and_dynamics_stops_some(finished_study: Path) -> None:
    store = _store(finished_study.parent / "test-study.db")
    counts = store.counts()
    # Async with one worker: the first trial of each cohort has no rival at the rung and always
    # runs on; how many later ones stop depends on the scores (4 to 9 seen across machines).
    assert counts["stopped"] >= 2 and counts["completed"] >= 2
    assert counts["completed"] + counts["stopped"] == 12
    for t in store.trials(status="stopped"):
        assert t["reason"].startswith("dynamics rung 1") and 0 < t["samples"] < t["planned_samples"]
        assert len(store.telemetry(t["trial_id"])) == t["steps"]  # stopped runs keep their telemetry
    for t in store.trials(status="completed"):
        assert t["samples"] == t["planned_samples"]
        names = {r["name"] for r in store.results(t["trial_id"])}
        assert {"val_loss"} < names and names & {"accuracy", "exact_match"}


def test_trials_read_the_data_the_driver_tokenised(finished_study: Path) -> None:
    """One entry per dataset, written before any trial started: a trial whose key differed from the
    driver's (another tokenizer fingerprint, setting or file) would have written one of its own."""
    entries = sorted(load_study(finished_study).data_cache.glob("*.json.gz"))
    assert len(entries) == 2
    first_start = min(t["started_at"] for t in _store(finished_study.parent / "test-study.db").trials())
    assert all(e.stat().st_mtime <= first_start for e in entries)


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
    before = _store(finished_study.parent / "test-study.db").trials()
    run_sweep(load_study(finished_study))
    after = _store(finished_study.parent / "test-study.db").trials()
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
    store = _store(Path(spec.store))
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


def _weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(next((run_dir / "model").glob("*.safetensors")))


LONG = "{epochs: 6, batch_size: 4, max_length: 64, max_tokens_per_micro_batch: 256, checkpoint_every: 7}"


def _long_study(root: Path, model: Path) -> Path:
    path = _write_study(root, model, "  learning_rate: [1.0e-3, 3.0e-3]\n", fixed=LONG)
    path.write_text(path.read_text().replace("  - {name: arithmetic", "  # - {name: arithmetic"))
    return path


def test_driver_killed_mid_trial_ends_its_trials_and_the_resume_is_exact(tiny_model_dir: Path, tmp_path: Path) -> None:
    """SIGKILL the driver while a trial is between checkpoints: the trial process dies with it,
    and the next sweep resumes that trial from its checkpoint (attempt 2) to the same weights as
    an uninterrupted run of the same study elsewhere."""
    path = _long_study(tmp_path / "killed", tiny_model_dir)
    db = tmp_path / "killed" / "test-study.db"
    proc = subprocess.Popen([sys.executable, "-m", "tunescout.cli", "sweep", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    deadline, at = time.time() + 240, None
    while time.time() < deadline and proc.poll() is None:
        rows = query(db, "SELECT t.trial_id, t.run_dir, MAX(x.step) FROM trials t JOIN telemetry x "
                          "USING (trial_id) WHERE t.status='running' GROUP BY t.trial_id")
        if rows and rows[0][2] >= 9 and rows[0][2] % 7:
            at = rows[0]
            break
        time.sleep(0.02)
    assert at is not None, "the sweep never reached a step between checkpoints"
    trial_id, run_dir, step = at
    pid = int((Path(run_dir) / ".lock").read_text().split()[0])
    assert alive(pid) and pid != proc.pid
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while alive(pid) and time.time() < deadline:
        time.sleep(0.05)
    assert not alive(pid), "the trial process outlived its driver"

    messages: list[str] = []
    counts = run_sweep(load_study(path), on_event=messages.append)
    assert counts["completed"] == 2 and counts["running"] == counts["pending"] == 0
    assert any(f"start {trial_id}" in m and "attempt 2" in m for m in messages)
    with _store(db) as store:
        trial = next(t for t in store.trials() if t["trial_id"] == trial_id)
        records = store.telemetry(trial_id)
    assert trial["attempts"] == 2 and trial["samples"] == trial["planned_samples"]
    assert [r["step"] for r in records] == list(range(1, trial["steps"] + 1))  # none lost or repeated
    resumed = [r["step"] for r in records if r["attempt"] == 2]
    assert resumed[0] > 1 and (resumed[0] - 1) % 7 == 0  # from its checkpoint, not from scratch
    assert resumed[0] <= step  # steps after the checkpoint were redone

    clean = _long_study(tmp_path / "clean", tiny_model_dir)
    assert run_sweep(load_study(clean))["completed"] == 2
    a, b = _weights(Path(run_dir)), _weights(tmp_path / "clean" / "test-study.db.runs" / trial_id)
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] == b[name]).all(), name


def test_changed_settings_train_new_trials_and_supersede_old_ones(tiny_model_dir: Path, tmp_path: Path,
                                                                   capsys) -> None:
    fixed = "{epochs: 1, batch_size: 8, max_length: 64, max_tokens_per_micro_batch: 256}"
    path = _write_study(tmp_path, tiny_model_dir, "  learning_rate: [1.0e-3, 3.0e-3]\n", fixed=fixed)
    path.write_text(path.read_text().replace("  - {name: arithmetic", "  # - {name: arithmetic"))
    run_sweep(load_study(path))
    with _store(tmp_path / "test-study.db") as store:
        first = {t["trial_id"]: t["finished_at"] for t in store.trials()}
    assert len(first) == 2

    path.write_text(path.read_text().replace("epochs: 1", "epochs: 2"))
    messages: list[str] = []
    run_sweep(load_study(path), on_event=messages.append)
    assert any("2 new, 0 kept, 2 newly superseded (2 of earlier spec versions in all)" in m for m in messages)
    with _store(tmp_path / "test-study.db") as store:
        current = store.trials()
        every = store.trials(all_versions=True)
    assert not set(first) & {t["trial_id"] for t in current}  # new ids, trained anew
    assert all(t["status"] == "completed" and t["config"]["epochs"] == 2 for t in current)
    assert {t["trial_id"]: t["finished_at"] for t in every if t["superseded"]} == first  # kept as they were

    db = str(tmp_path / "test-study.db")
    assert main(["status", db, "--json"]) == 0
    assert {t["trial_id"] for t in json.loads(capsys.readouterr().out)["trials"]} == {t["trial_id"] for t in current}
    assert main(["status", db, "--json", "--all-versions"]) == 0
    shown = json.loads(capsys.readouterr().out)["trials"]
    assert len(shown) == 4 and sum(t["superseded"] for t in shown) == 2
    assert main(["status", db]) == 0
    assert "2 trials of earlier spec versions not shown" in capsys.readouterr().out
    assert main(["rank", db, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["ranking"]) == 2
    assert main(["rank", db, "--json", "--all-versions"]) == 0  # old configs ranked as configs of their own
    ranked = [r["config_id"] for r in json.loads(capsys.readouterr().out)["ranking"]]
    assert len(ranked) == 4 and sum(c.endswith("@v1") for c in ranked) == 2
    from tunescout.report import build_report

    page = build_report(db, tmp_path / "report.html").read_text()
    assert "2 more of earlier spec versions left out" in page

    # back to the first settings: the first trials count again, nothing is retrained
    path.write_text(path.read_text().replace("epochs: 2", "epochs: 1"))
    messages.clear()
    run_sweep(load_study(path), on_event=messages.append)
    assert any("0 new, 2 kept, 2 newly superseded (2 of earlier spec versions in all)" in m for m in messages)
    with _store(tmp_path / "test-study.db") as store:
        assert {t["trial_id"]: t["finished_at"] for t in store.trials()} == first


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


def test_a_second_driver_of_the_same_store_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    from tunescout.train.rundir import RunDirLocked, hold_lock

    path = _write_study(tmp_path, tiny_model_dir, "  learning_rate: [1.0e-3]\n")
    spec = load_study(path)
    with hold_lock(f"{spec.store}.lock", "held by {pid}"):
        with pytest.raises(RunDirLocked, match=f"sweep driver process {os.getpid()} is running it"):
            run_sweep(spec)
    assert not Path(spec.runs_dir).exists()  # nothing was launched


def test_a_changed_stopping_rule_reopens_the_trials_the_old_one_stopped(tiny_model_dir: Path,
                                                                        tmp_path: Path) -> None:
    fixed = "{epochs: 2, batch_size: 4, max_length: 64, max_tokens_per_micro_batch: 256, checkpoint_every: 3}"
    path = _write_study(tmp_path, tiny_model_dir, "  learning_rate: [1.0e-4, 1.0e-3, 3.0e-3, 1.0e-2]\n",
                        "stopping: {rule: dynamics, rungs: [0.3], eta: 2}\n", fixed=fixed)
    path.write_text(path.read_text().replace("  - {name: arithmetic", "  # - {name: arithmetic"))
    counts = run_sweep(load_study(path))
    assert counts["stopped"] >= 1
    with _store(tmp_path / "test-study.db") as store:
        stopped = {t["trial_id"]: t["steps"] for t in store.trials(status="stopped")}

    path.write_text(path.read_text().replace("stopping: {rule: dynamics, rungs: [0.3], eta: 2}", "stopping: {rule: none}"))
    messages: list[str] = []
    counts = run_sweep(load_study(path), on_event=messages.append)
    assert counts["completed"] == 4 and counts["stopped"] == 0
    assert any(f"{len(stopped)} stopped trials reopened" in m for m in messages)
    with _store(tmp_path / "test-study.db") as store:
        for tid, steps in stopped.items():
            trial = next(t for t in store.trials() if t["trial_id"] == tid)
            records = store.telemetry(tid)
            assert trial["attempts"] == 2 and trial["samples"] == trial["planned_samples"]
            assert [r["step"] for r in records] == list(range(1, trial["steps"] + 1))
            assert [r["step"] for r in records if r["attempt"] == 2][0] == steps + 1  # continued where it stopped


PROMOTE_GRID = "  learning_rate: [3.0e-4, 1.0e-3, 2.0e-3, 3.0e-3, 6.0e-3, 1.0e-2]\n  batch_size: [4, 8]\n"
PROMOTE = "stopping: {rule: dynamics, mode: promote, rungs: [0.25], eta: 3}\n"
PROMOTE_FIXED = "{epochs: 2, max_length: 64, max_tokens_per_micro_batch: 256, checkpoint_every: 50}"


def _promote_study(root: Path, model: Path) -> Path:
    path = _write_study(root, model, PROMOTE_GRID, PROMOTE, fixed=PROMOTE_FIXED)
    path.write_text(path.read_text().replace("  - {name: arithmetic", "  # - {name: arithmetic"))
    return path


@pytest.fixture(scope="module")
def promoted(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("promote")
    run_sweep(load_study(_promote_study(root, tiny_model_dir)))
    return root / "test-study.db"


def test_promotion_ranks_the_whole_cohort_once_and_trains_a_fraction(promoted: Path, capsys) -> None:
    """The issue's bar: 12 trials, rung 0.25, eta 3: 8 stop at the rung, at most 55% of the tokens."""
    with _store(promoted) as store:
        trials, decisions = store.trials(), store.decisions()
    by_status = {s: [t for t in trials if t["status"] == s] for s in ("completed", "stopped")}
    assert len(by_status["stopped"]) == 8 and len(by_status["completed"]) == 4
    assert len(decisions) == 12 and {d["rung"] for d in decisions} == {1} and sum(d["kept"] for d in decisions) == 4
    assert sorted(d["rank"] for d in decisions) == list(range(1, 13))
    tokens = sum(t["tokens"] for t in trials)
    planned = sum(t["planned_tokens"] for t in trials)
    assert tokens <= 0.55 * planned
    for t in by_status["stopped"]:  # stopped where it paused (the first step past the rung that is at
        point = math.ceil(0.25 * t["planned_samples"])  # least the min_steps-th), without another launch
        bs = t["hparams"]["batch_size"]
        assert t["samples"] >= point and t["steps"] >= 3 and (t["steps"] == 3 or t["samples"] - bs < point)
        assert t["attempts"] == 1
        assert t["reason"].startswith("dynamics promote rung 1 (25% of samples): rank ")
    for t in by_status["completed"]:  # continued from its checkpoint at the rung
        assert t["attempts"] == 2 and t["samples"] == t["planned_samples"]
        with _store(promoted) as store:
            steps = [(r["step"], r["attempt"]) for r in store.telemetry(t["trial_id"])]
        assert [s for s, _ in steps] == list(range(1, t["steps"] + 1))
        first_resumed = next(s for s, a in steps if a == 2)
        assert first_resumed > 1 and steps[first_resumed - 2][1] == 1
    assert main(["status", str(promoted), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["trials"]
    assert all(len(t["decisions"]) == 1 and t["decisions"][0]["rung"] == 1 for t in shown)
    assert main(["analyze", str(promoted), "--json", "--boot", "50"]) == 0
    analysis = json.loads(capsys.readouterr().out)
    (agreement,) = analysis["promotion"]
    assert (agreement["n_ranked"], agreement["n_kept"], agreement["n_finished"]) == (12, 4, 4)
    kept_scores = {t["trial_id"]: t["score"] for t in shown if t["status"] == "completed"}
    if len(set(kept_scores.values())) > 1:  # Spearman is defined only when the kept trials' scores differ
        assert -1.0 <= agreement["rho"] <= 1.0
    else:
        assert math.isnan(agreement["rho"])
    assert "ran with stopping rule" in analysis["notes"]["dynamics"]


def test_dry_run_prints_the_expected_promotion_compute(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["sweep", str(_promote_study(tmp_path, tiny_model_dir)), "--dry-run"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("promote mode (rungs [0.25], eta 3): about ") and "50% of the grid" in last


def test_a_driver_killed_while_trials_wait_at_a_rung_decides_the_same(promoted: Path, tiny_model_dir: Path,
                                                                      tmp_path: Path) -> None:
    path = _promote_study(tmp_path, tiny_model_dir)
    db = tmp_path / "test-study.db"
    proc = subprocess.Popen([sys.executable, "-m", "tunescout.cli", "sweep", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if len(query(db, "SELECT trial_id FROM trials WHERE status='paused'")) >= 6:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    paused = {r[0] for r in query(db, "SELECT trial_id FROM trials WHERE status='paused'")}
    assert len(paused) >= 6 and not query(db, "SELECT * FROM decisions")

    run_sweep(load_study(path))
    with _store(db) as store, _store(promoted) as reference:
        got = {(d["trial_id"], d["rank"], d["kept"]) for d in store.decisions()}
        want = {(d["trial_id"], d["rank"], d["kept"]) for d in reference.decisions()}
        trials = {t["trial_id"]: t for t in store.trials()}
    assert got == want  # the same trial ids (same study, same data) and the same decisions
    for tid in paused:  # a paused trial was not trained again to reach its rung
        assert trials[tid]["attempts"] == (2 if trials[tid]["status"] == "completed" else 1)


def test_failed_trials_exit_nonzero_with_a_summary_and_retry_once_fixed(tiny_model_dir: Path, tmp_path: Path,
                                                                       capsys, caplog) -> None:
    """A sweep that lost trials says which and why and exits 1; after the cause is fixed (here the
    model's weights), `--retry-failed` runs them again and they complete."""
    caplog.set_level("INFO", logger="tunescout.study")
    broken = tmp_path / "model"
    shutil.copytree(tiny_model_dir, broken)
    weights = sorted(broken.glob("*.safetensors"))
    good = [w.read_bytes() for w in weights]
    for w in weights:
        w.write_bytes(b"not a safetensors file")
    path = _write_study(tmp_path, broken, "  learning_rate: [1.0e-3]\n",
                        fixed="{max_steps: 2, batch_size: 8, max_length: 64, max_tokens_per_micro_batch: 256}")
    assert main(["sweep", str(path)]) == 1
    err = capsys.readouterr().err
    assert "2 trial(s) failed:" in err and "--retry-failed" in err
    assert main(["sweep", str(path)]) == 1  # a plain rerun keeps them failed: the cause may still be there
    assert any("2 failed trials kept as failed" in r.getMessage() for r in caplog.records)
    for w, data in zip(weights, good):
        w.write_bytes(data)
    assert main(["sweep", str(path), "--retry-failed"]) == 0
    trials = _store(tmp_path / "test-study.db").trials()
    assert {t["status"] for t in trials} == {"completed"} and all(t["attempts"] >= 2 for t in trials)


def test_a_running_sweep_says_where_it_stands(tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import tunescout.study.driver as driver

    monkeypatch.setattr(driver, "PROGRESS_EVERY_S", 0.0)  # every driver tick instead of every 30 s
    path = _write_study(tmp_path, tiny_model_dir, "  learning_rate: [1.0e-3]\n",
                        fixed="{max_steps: 3, batch_size: 4, max_length: 64, max_tokens_per_micro_batch: 256}")
    spec = load_study(path)
    spec.datasets = spec.datasets[:1]
    messages: list[str] = []
    run_sweep(spec, on_event=messages.append)
    lines = [m for m in messages if m.startswith("progress: ")]
    assert lines and "0/1 trials done" in lines[0] and "1 running" in lines[-1] or "1 pending" in lines[0]
    assert all("tokens trained" in m and "of the study run to the end" in m for m in lines)
