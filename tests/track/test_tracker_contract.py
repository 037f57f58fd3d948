"""One contract suite over every registered tracker: what a run sends is what its backend holds
(params, each step's values at the right step, final scores, status, group), a resumed run holds
each step once with the values of the attempt that finished, a tracker that cannot start leaves
none of the others running, trials opening one new store at once each arrive whole, a study
trial gets a tracker run of its own whatever the environment says, and a missing package or
unknown name fails when the config is built."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import multiprocessing
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

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


def _next_attempt(name: str) -> None:
    """TensorBoard reads a folder's event files in name order: creation time in seconds, then a
    per-process counter compared as text (``.10`` before ``.9``). A real resume is a new process
    and later; attempts made in one second of one process, as here, could be read out of order."""
    if name == "tensorboard":
        time.sleep(1.05)


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


def test_a_resumed_run_holds_each_step_once_with_the_values_of_the_attempt_that_finished(
        name: str, tmp_path: Path) -> None:
    # The real case: the first attempt got past its last checkpoint (step 2) and logged step 3
    # before it stopped; the resumed attempt redoes step 3 (on a GPU not always bit-identically).
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    first = SimpleNamespace(status="paused", eval_loss=None, metrics={}, final_loss=2.0)
    [sink] = open_trackers([name], run_dir, CONFIG, first)
    for step in (1, 2, 3):
        sink.write(_record(step))
    sink.close()
    assert READERS[name](run_dir)["status"] == "paused"

    _next_attempt(name)
    second = SimpleNamespace(status="completed", eval_loss=1.5, metrics={}, final_loss=0.25)
    [sink] = open_trackers([name], run_dir, CONFIG, second, start_step=2)
    sink.write(dataclasses.replace(_record(3), loss=0.25, grad_norm=9.0))
    sink.write(_record(4))
    sink.close()
    got = READERS[name](run_dir)
    # every tracker can rewrite the redone step (MLflow: into a new run that carries steps 1-2 over)
    assert got["history"]["train/loss"] == [(1, 3.0), (2, 2.0), (3, 0.25), (4, 0.0)]
    assert got["history"]["train/grad_norm"] == [(1, 0.5), (2, 1.0), (3, 9.0), (4, 2.0)]
    assert got["status"] == "completed" and got["final"]["val_loss"] == 1.5
    assert got["name"] == "run"


def test_a_resume_can_resume_again(name: str, tmp_path: Path) -> None:
    outcome = SimpleNamespace(status="paused", eval_loss=None, metrics={}, final_loss=1.0)
    for start, steps in ((0, (1, 2)), (2, (3, 4)), (3, (4, 5))):
        _next_attempt(name)
        [sink] = open_trackers([name], tmp_path, CONFIG, outcome, start_step=start)
        for step in steps:
            sink.write(_record(step))
        sink.close()
    assert [s for s, _ in READERS[name](tmp_path)["history"]["train/loss"]] == [1, 2, 3, 4, 5]


class _Boom:
    def start(self, run, previous):
        raise ConnectionError("tracking server unreachable")


def test_a_tracker_that_fails_to_start_finishes_those_started_before_it(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TRACKERS, "boom", SimpleNamespace(name="boom", modules=(), create=_Boom))
    with pytest.raises(ConnectionError, match="unreachable"):
        open_trackers([name, "boom"], tmp_path, CONFIG, SimpleNamespace(status="running"))
    got = READERS[name](tmp_path)  # trackers.json names what was started
    assert got["status"] == "failed"
    if "backend_status" in got:
        assert got["backend_status"] == "FAILED"  # not left RUNNING


@pytest.mark.parametrize("var", ["MLFLOW_RUN_ID", "WANDB_RUN_ID"])
def test_a_study_trial_ignores_a_global_run_id(name: str, var: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    # A run id in the environment would put every trial of a study into that one tracker run.
    monkeypatch.setenv(var, "0123456789abcdef0123456789abcdef")
    ids = []
    for trial in ("t1", "t2"):
        run_dir = tmp_path / trial
        run_dir.mkdir()
        [sink] = open_trackers([name], run_dir, CONFIG, SimpleNamespace(status="completed"), group="study")
        sink.write(_record(1))
        sink.close()
        ids.append(json.loads((run_dir / "trackers.json").read_text())[name])
        assert READERS[name](run_dir)["name"] == trial
    if name in var.lower():
        assert ids[0] != ids[1] and "0123456789abcdef" not in json.dumps(ids)
        assert f"{var} is ignored" in caplog.text


def _parallel_trial(name: str, run_dir: Path, start: Any, errors: Any) -> None:
    """One of several trials of a study, each in its own process, opening its tracker at once."""
    try:
        start.wait(timeout=60)
        [sink] = open_trackers([name], run_dir, CONFIG, SimpleNamespace(status="completed"), group="study")
        for step in (1, 2, 3):
            sink.write(_record(step))
        sink.close()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the test
        errors.put(f"{run_dir.name}: {type(exc).__name__}: {exc}")


def test_trials_starting_at_once_into_one_new_store_each_arrive_whole(name: str, tmp_path: Path) -> None:
    # Parallel workers of a sweep start their first trials together, into a store none has opened
    # yet (MLflow's SQLite file: two processes creating its tables at once both fail).
    context = multiprocessing.get_context("fork")
    trials = [tmp_path / f"t{i}" for i in range(4)]
    start, errors = context.Barrier(len(trials)), context.Queue()
    workers = [context.Process(target=_parallel_trial, args=(name, run_dir, start, errors)) for run_dir in trials]
    for run_dir, worker in zip(trials, workers):
        run_dir.mkdir()
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert not failures and all(w.exitcode == 0 for w in workers), failures
    for run_dir in trials:
        got = READERS[name](run_dir)
        assert got["name"] == run_dir.name and got["status"] == "completed"
        assert got["history"]["train/loss"] == [(1, 3.0), (2, 2.0), (3, 1.0)]


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
        TrainConfig.of(track=["wandb"])


def test_off_rank_zero_nothing_is_tracked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RANK", "1")
    assert open_trackers(NAMES, tmp_path, CONFIG, SimpleNamespace(status="completed")) == []
    assert not (tmp_path / "trackers.json").exists()


def test_where_wandb_refuses_a_rewind_the_run_is_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         caplog) -> None:
    wandb = pytest.importorskip("wandb")
    real = wandb.init

    def no_rewind(**kwargs):
        if "resume_from" in kwargs:
            raise wandb.errors.CommError("rewind is not enabled for this entity")
        return real(**kwargs)

    outcome = SimpleNamespace(status="completed", eval_loss=1.5, metrics={}, final_loss=1.0)
    [sink] = open_trackers(["wandb"], tmp_path, CONFIG, outcome)
    sink.write(_record(1))
    sink.close()
    monkeypatch.setattr(wandb, "init", no_rewind)
    [sink] = open_trackers(["wandb"], tmp_path, CONFIG, outcome, start_step=1)
    sink.write(_record(2))
    sink.close()
    assert "refused to rewind" in caplog.text
    assert READERS["wandb"](tmp_path)["history"]["train/loss"] == [(1, 3.0), (2, 2.0)]
