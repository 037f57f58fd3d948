"""The executor contract, one suite over every executor in ``EXECUTORS`` (Ray on a local CPU
head): real trials of the tiny model, their messages, verdicts, pauses, deaths and shutdown."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from procs import alive

from tunescout.demo.tasks import make_rows, write_jsonl
from tunescout.study.executors import EXECUTORS, build_executor, validate_executor
from tunescout.study.messages import TrialEvent, TrialPayload
from tunescout.train.telemetry import Pause



@pytest.fixture(params=sorted(EXECUTORS))
def executor(request):
    options = {"name": request.param, "workers": 2, "cpus_per_trial": 1}
    if request.param == "ray":
        options["address"] = request.getfixturevalue("cluster")
    ex = build_executor(options)
    yield ex
    ex.shutdown()
    assert ex.running() == []


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    write_jsonl(make_rows("sentiment", 32, seed=0), path)
    return path


def _payload(trial_id: str, model: Path, data: Path, out: Path, checkpoint_every: int | None = 2,
             model_path: str | None = None, **extra) -> TrialPayload:
    config = {"model": model_path or str(model), "method": "full", "data": [{"path": str(data)}],
              "output_dir": str(out), "epochs": 1, "batch_size": 4, "max_length": 64,
              "max_tokens_per_micro_batch": 256, "learning_rate": 1e-3, "progress": False,
              "checkpoint_every": checkpoint_every}
    return TrialPayload(trial_id, config, attempt=1, **extra)


def _events(ex, until_done: set[str], reply=lambda e: None, timeout: float = 240) -> list[TrialEvent]:
    """Every event until each trial in ``until_done`` has ended; asks are answered by ``reply``."""
    got, deadline = [], time.monotonic() + timeout
    while until_done and time.monotonic() < deadline:
        event = ex.next_event(timeout=1.0)
        if event is None:
            continue
        got.append(event)
        if event.kind == "ask":
            ex.reply(event.trial_id, reply(event))
        elif event.kind == "done":
            until_done.discard(event.trial_id)
    assert not until_done, f"no end within {timeout}s for {until_done}"
    return got


def test_messages_arrive_in_order_asks_only_at_the_rule_points_and_one_done(executor, tiny_model_dir: Path,
                                                                             data: Path, tmp_path: Path) -> None:
    executor.submit(_payload("a", tiny_model_dir, data, tmp_path / "a", checkpoint_every=3,
                             ask_at=((10, 1), (20, 4)), planned_samples=30))
    executor.submit(_payload("b", tiny_model_dir, data, tmp_path / "b"))
    assert sorted(executor.running()) == ["a", "b"]
    events = _events(executor, {"a", "b"})
    for tid in ("a", "b"):
        mine = [e for e in events if e.trial_id == tid]
        assert [e.kind for e in mine][-1] == "done" and sum(e.kind == "done" for e in mine) == 1
        steps = [e.record["step"] for e in mine if e.kind != "done"]
        assert steps == list(range(1, 9))  # 32 rows / batch 4, in order
        assert mine[-1].summary.status == "completed" and mine[-1].summary.steps == 8
    asked = [(e.record["step"], e.record["samples"]) for e in events if e.trial_id == "a" and e.kind == "ask"]
    # The rule's points: the first record past 10 samples (step 3), past 20 and at least the 4th
    # step (5); before each checkpoint (every 3 steps: 3, 6) and at the last step (8, all planned samples).
    assert asked == [(3, 12), (5, 20), (6, 24), (8, 30)]  # 2 of the 32 rows exceed max_length: 30 samples
    b_asked = [e.record["step"] for e in events if e.trial_id == "b" and e.kind == "ask"]
    assert b_asked == [2, 4, 6, 8]  # checkpoint_every 2, no rule: only where a checkpoint follows
    assert executor.running() == []


def test_a_stop_or_pause_verdict_ends_the_trial_there(executor, tiny_model_dir: Path, data: Path,
                                                      tmp_path: Path) -> None:
    for tid, point in (("stop", 8), ("pause", 12)):
        # no checkpoints: asked only at the rule's point
        executor.submit(_payload(tid, tiny_model_dir, data, tmp_path / tid, checkpoint_every=None, ask_at=((point, 1),)))
    verdicts = {"stop": "rung 1: rank 3 of 3", "pause": Pause("rung 1")}
    events = _events(executor, {"stop", "pause"}, reply=lambda e: verdicts[e.trial_id])
    done = {e.trial_id: e.summary for e in events if e.kind == "done"}
    assert all(d.steps for d in done.values()), done
    assert (done["stop"].status, done["stop"].reason, done["stop"].steps) == ("stopped", "rung 1: rank 3 of 3", 2)
    assert (done["pause"].status, done["pause"].steps) == ("paused", 3)
    assert (tmp_path / "pause" / "checkpoints").is_dir()  # a paused trial leaves its checkpoint to resume from


def test_a_cancelled_or_failing_trial_still_ends_with_one_done(executor, tiny_model_dir: Path, data: Path,
                                                               tmp_path: Path) -> None:
    executor.submit(_payload("broken", tiny_model_dir, data, tmp_path / "x", model_path=str(tmp_path / "no-such-model")))
    executor.submit(_payload("slow", tiny_model_dir, data, tmp_path / "c", ask_at=((4, 1),)))
    got, deadline = [], time.monotonic() + 240
    while len([e for e in got if e.kind == "done"]) < 2 and time.monotonic() < deadline:
        event = executor.next_event(timeout=1.0)
        if event is None:
            continue
        got.append(event)
        if event.kind == "ask":  # hold the trial at its first ask, then cancel it
            executor.cancel("slow")
    done = {e.trial_id: e.summary for e in got if e.kind == "done"}
    assert done["broken"].status == "failed" and "no-such-model" in done["broken"].reason
    assert done["broken"].retryable is True  # a missing model may be a mount not yet there
    reason = done["slow"].reason
    assert done["slow"].status == "failed" and ("exit code -9" in reason or "cancel" in reason.lower()), reason
    assert executor.running() == []
    assert executor.next_event(timeout=2.0) is None  # nothing after the one end of each


def test_shutdown_returns_with_no_trial_process_left(executor, tiny_model_dir: Path, data: Path,
                                                     tmp_path: Path) -> None:
    executor.submit(_payload("held", tiny_model_dir, data, tmp_path / "h", ask_at=((4, 1),)))
    deadline = time.monotonic() + 240
    event = None
    while time.monotonic() < deadline and (event is None or event.kind != "ask"):
        event = executor.next_event(timeout=1.0)  # not answered: the trial waits at its first ask
    assert event is not None and event.kind == "ask"
    pid = int((tmp_path / "h" / ".lock").read_text())
    assert alive(pid)
    executor.shutdown()
    assert executor.running() == [] and not alive(pid)


def test_options_are_validated_naming_the_key() -> None:
    assert validate_executor(None).name == "local" and validate_executor({}).max_retries == 1
    for bad, key in (({"name": "slurm"}, "executor.name"), ({"gpus_per_trial": 1.5}, "executor.gpus_per_trial"),
                     ({"max_retries": -1}, "executor.max_retries"), ({"adress": "auto"}, "unknown key(s) adress"),
                     ({"name": "local", "address": "auto"}, "executor.address")):
        with pytest.raises(ValueError, match=key.replace("(", r"\(").replace(")", r"\)")):
            validate_executor(bad)


@pytest.mark.parametrize(("given", "env", "joined"), [(None, None, "local"), (None, "10.0.0.5:6379", "10.0.0.5:6379"),
                                                      ("auto", "10.0.0.5:6379", "auto")])
def test_ray_without_an_address_starts_its_own_instance(monkeypatch, given, env, joined) -> None:
    """A bare ray.init() joins whatever cluster an earlier command left on this machine; the
    executor asks for one only when told to (``address``, or Ray's own ``RAY_ADDRESS``)."""
    import sys
    import types

    import tunescout.study.executors.ray_cluster as ray_cluster

    class Joined(Exception):
        pass

    calls = []

    def init(**kw):
        calls.append(kw["address"])
        raise Joined  # what it would join is all this test asks

    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(is_initialized=lambda: False, init=init))
    if env is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", env)
    with pytest.raises(Joined):
        ray_cluster.RayExecutor(validate_executor({"name": "ray", **({"address": given} if given else {})}))
    assert calls == [joined]
