"""Real runs with trackers: ``tunescout train`` mirrored into a local MLflow store and TensorBoard
event files with the steps of its telemetry; a study whose trials are MLflow runs grouped by the
study, with their HP configuration, status and final scores, on a dataset scored by a harness task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from readers import read_mlflow, read_tensorboard

from tunescout.cli import main
from tunescout.demo.tasks import write_jsonl
from tunescout.train.identity import run_identity
from tunescout.config import build_config

pytest.importorskip("mlflow")
pytest.importorskip("tensorboard")

ROWS = [{"prompt": f"Say {w}", "completion": w} for w in "alpha beta gamma delta apple river stone cloud".split()]


@pytest.fixture(autouse=True)
def local_stores(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # MLflow's default store, mlruns.db, goes in the working directory
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "TENSORBOARD_LOGGING_DIR", "RANK"):
        monkeypatch.delenv(var, raising=False)


def test_a_short_run_lands_in_mlflow_and_tensorboard_with_its_steps(tiny_model_dir: Path, tmp_path: Path,
                                                                   capsys) -> None:
    train_file = write_jsonl(ROWS, tmp_path / "train.jsonl")
    eval_file = write_jsonl(ROWS[:3], tmp_path / "eval.jsonl")
    (tmp_path / "run.yaml").write_text(
        f"model: {tiny_model_dir}\ndata: {train_file}\neval_data: {eval_file}\nbatch_size: 2\nmax_steps: 4\n"
        "eval_every: 2\nmax_length: 64\nmax_tokens_per_micro_batch: 256\noutput_dir: run\nprogress: false\n"
        "track: [mlflow, tensorboard]\nlearning_rate: 1.0e-3\n")
    assert main(["train", str(tmp_path / "run.yaml")]) == 0
    capsys.readouterr()
    run = tmp_path / "run"
    steps = [json.loads(line) for line in (run / "telemetry.jsonl").read_text().splitlines()]
    result = json.loads((run / "result.json").read_text())
    assert (tmp_path / "mlruns.db").exists()
    for got in (read_mlflow(run), read_tensorboard(run)):
        assert [s for s, _ in got["history"]["train/loss"]] == [1, 2, 3, 4]
        assert [v for _, v in got["history"]["train/loss"]] == pytest.approx([s["loss"] for s in steps])
        evals = [(s["step"], s["val_loss"]) for s in steps if s["val_loss"] is not None]
        assert [s for s, _ in got["history"]["eval/val_loss"]] == [s for s, _ in evals] == [2]
        assert [v for _, v in got["history"]["eval/val_loss"]] == pytest.approx([v for _, v in evals])
        assert got["final"]["val_loss"] == pytest.approx(result["eval_loss"])
        assert got["status"] == "completed"
    mlflow_run = read_mlflow(run)
    assert mlflow_run["backend_status"] == "FINISHED" and mlflow_run["group"] == "tunescout"
    assert float(mlflow_run["params"]["learning_rate"]) == 1e-3 and mlflow_run["params"]["max_steps"] == "4"


def test_track_does_not_change_a_runs_identity(tiny_model_dir: Path) -> None:
    plain = build_config({"model": str(tiny_model_dir)})
    tracked = build_config({"model": str(tiny_model_dir), "track": ["tensorboard"], "track_group": "g"})
    assert run_identity(plain) == run_identity(tracked)


def test_a_study_tracks_each_trial_and_ranks_on_a_harness_task(tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("lm_eval")
    from mlflow.tracking import MlflowClient
    from harness_tasks import write_mc_task

    from tunescout.study.spec import load_study
    from tunescout.study.store import open_store
    from tunescout.study.sweep import run_sweep

    write_jsonl(ROWS, tmp_path / "train.jsonl")
    write_jsonl(ROWS[:3], tmp_path / "eval.jsonl")
    tasks = write_mc_task(tmp_path / "tasks")
    (tmp_path / "study.yaml").write_text(
        f"name: tracked-study\nmodels: [{tiny_model_dir}]\nmethods: [full]\n"
        "datasets:\n"
        f"  - {{name: mc, train: train.jsonl, eval: eval.jsonl, metric: {{harness: [tiny_mc], key: acc, include_path: {tasks}}}}}\n"
        "grid:\n  learning_rate: [1.0e-4, 1.0e-3]\n"
        "fixed: {epochs: 1, batch_size: 4, max_length: 64, max_tokens_per_micro_batch: 256, track: [mlflow]}\n")
    spec = load_study(tmp_path / "study.yaml")
    counts = run_sweep(spec, workers=1)
    assert counts.get("completed") == 2, counts

    metric = "harness:tiny_mc:acc"
    with open_store(spec.store, readonly=True) as store:
        trials = store.trials(spec.name)
        scores = {r["trial_id"]: r["value"] for r in store.results(study=spec.name) if r["name"] == metric}
    assert len(scores) == 2 and all(0.0 <= v <= 1.0 for v in scores.values())

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("tracked-study")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(t["trial_id"] for t in trials)
    lrs = {t["trial_id"]: t["hparams"]["learning_rate"] for t in trials}
    for r in runs:
        assert float(r.data.params["learning_rate"]) == lrs[r.info.run_name]
        assert r.data.tags["tunescout.status"] == "completed" and r.info.status == "FINISHED"
        assert r.data.metrics[f"final/{metric}"] == pytest.approx(scores[r.info.run_name])
        assert "final/val_loss" in r.data.metrics


class _Unreachable:
    def start(self, run, previous):
        raise ConnectionError("tracking server unreachable")


def test_a_tracker_that_cannot_start_fails_the_run_and_closes_what_was_opened(
        tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from tunescout.config import DataSource, TrainConfig
    from tunescout.track import TRACKERS
    from tunescout.train import loop, train

    closed = []
    for cls in (loop.JsonlSink, loop.ProgressSink):
        monkeypatch.setattr(cls, "close", lambda self, real=cls.close: (closed.append(type(self).__name__), real(self)))
    monkeypatch.setitem(TRACKERS, "unreachable", SimpleNamespace(name="unreachable", modules=(), create=_Unreachable))
    config = TrainConfig.of(model=str(tiny_model_dir), data=[DataSource(str(write_jsonl(ROWS, tmp_path / "t.jsonl")))],
                         batch_size=4, max_steps=1, max_length=64, max_tokens_per_micro_batch=256, progress=False,
                         output_dir=str(tmp_path / "run"), track=["tensorboard", "unreachable"])
    with pytest.raises(ConnectionError, match="unreachable"):
        train(config)
    assert sorted(closed) == ["JsonlSink", "ProgressSink"]
    assert read_tensorboard(tmp_path / "run")["status"] == "failed"  # the one started before it is finished
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "failed" and "unreachable" in result["reason"]
