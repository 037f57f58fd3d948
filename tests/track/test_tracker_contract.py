"""One contract suite over every registered tracker: what a run sends is what its backend holds
(params, each step's values at the right step, final scores, status, group), a resumed run
continues the same tracker run, and a missing package or unknown name fails when the config is built."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from readers import READERS

from tunescout.config import ConfigError, TrainConfig, build_config
from tunescout.track import TRACKERS, check_trackers, open_trackers
from tunescout.train.telemetry import StepRecord

NAMES = sorted(TRACKERS)
CONFIG = {"model": "tiny", "method": "lora", "learning_rate": 3e-4, "batch_size": 8, "lora": {"r": 8},
          "data": [{"path": "train.jsonl"}], "grad_clip": None}


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    for var in ("MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "WANDB_PROJECT", "WANDB_RUN_ID", "WANDB_DIR",
                "TENSORBOARD_LOGGING_DIR", "RANK"):
        monkeypatch.delenv(var, raising=False)


def _record(step: int, val_loss: float | None = None, metrics: dict | None = None) -> StepRecord:
    return StepRecord(step=step, samples=8 * step, tokens=100 * step, loss=4.0 - step, grad_norm=0.5 * step,
                      lr=3e-4, tokens_per_s=1000.0, wall_s=0.1 * step, val_loss=val_loss, metrics=metrics)


def _available(name: str) -> bool:
    return all(importlib.util.find_spec(m) for m in TRACKERS[name].modules)


@pytest.fixture(params=NAMES)
def name(request) -> str:
    if not _available(request.param):
        pytest.skip(f"{request.param} not installed")
    return request.param


def test_a_run_arrives_whole(name: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "t0123abcd"
    run_dir.mkdir()
    outcome = SimpleNamespace(status="running")
    [sink] = open_trackers([name], run_dir, CONFIG, outcome, group="my-study")
    for step in (1, 2, 3):
        sink.write(_record(step, val_loss=2.5 if step == 2 else None, metrics={"accuracy": 0.5} if step == 2 else None))
    outcome.status, outcome.eval_loss, outcome.metrics, outcome.final_loss = "completed", 2.25, {"accuracy": 0.75}, 1.0
    sink.close()

    got = READERS[name](run_dir)
    assert got["history"]["train/loss"] == [(1, 3.0), (2, 2.0), (3, 1.0)]
    assert got["history"]["train/grad_norm"] == [(1, 0.5), (2, 1.0), (3, 1.5)]
    assert got["history"]["train/samples"] == [(1, 8), (2, 16), (3, 24)]
    assert got["history"]["eval/val_loss"] == [(2, 2.5)]
    assert got["history"]["eval/accuracy"] == [(2, 0.5)]
    assert got["final"] == pytest.approx({"val_loss": 2.25, "accuracy": 0.75, "final_loss": 1.0})
    assert got["status"] == "completed"
    assert float(got["params"]["learning_rate"]) == 3e-4
    lora_r = got["params"].get("lora.r", got["params"].get("lora", {}).get("r") if isinstance(got["params"].get("lora"), dict) else None)
    assert int(lora_r) == 8
    assert got["name"] == "t0123abcd"
    if got["group"] is not None:
        assert got["group"] == "my-study"


def test_a_resumed_run_continues_its_tracker_run(name: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    first = SimpleNamespace(status="paused", eval_loss=None, metrics={}, final_loss=2.0)
    [sink] = open_trackers([name], run_dir, CONFIG, first)
    sink.write(_record(1))
    sink.write(_record(2))
    sink.close()
    state = json.loads((run_dir / "trackers.json").read_text())
    assert READERS[name](run_dir)["status"] == "paused"

    second = SimpleNamespace(status="completed", eval_loss=1.5, metrics={}, final_loss=1.0)
    [sink] = open_trackers([name], run_dir, CONFIG, second, start_step=2)
    sink.write(_record(3))
    sink.close()
    assert json.loads((run_dir / "trackers.json").read_text()) == state  # the same tracker run
    got = READERS[name](run_dir)
    assert got["history"]["train/loss"] == [(1, 3.0), (2, 2.0), (3, 1.0)]
    assert got["status"] == "completed" and got["final"]["val_loss"] == 1.5


def test_a_backend_error_mid_run_drops_the_tracker_not_the_run(name: str, tmp_path: Path, caplog) -> None:
    [sink] = open_trackers([name], tmp_path, CONFIG, SimpleNamespace(status="completed"))
    tracker = next(iter(sink._trackers.values()))
    tracker.log = lambda step, values: (_ for _ in ()).throw(ConnectionError("server gone"))
    sink.write(_record(1))  # does not raise
    assert "server gone" in caplog.text and not sink._trackers
    sink.close()


def test_unknown_or_missing_trackers_fail_when_the_config_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"unknown tracker 'mlfow' \(did you mean `mlflow`\?\)"):
        build_config({"track": ["mlfow"]})
    with pytest.raises(ConfigError, match="listed twice"):
        check_trackers(["tensorboard", "tensorboard"])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m == "wandb" else real(m, *a))
    with pytest.raises(ConfigError, match=r"track: wandb needs wandb, which is not installed: pip install 'tunescout\[track\]'"):
        TrainConfig(track=["wandb"])


def test_off_rank_zero_nothing_is_tracked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RANK", "1")
    assert open_trackers(NAMES, tmp_path, CONFIG, SimpleNamespace(status="completed")) == []
    assert not (tmp_path / "trackers.json").exists()
