"""The driver's steps one at a time, on an in-memory store and a scripted executor: what each
records, what it answers, and what it queues (the sweep tests run them together for real)."""

from __future__ import annotations

from tunescout.study.driver import decide, launch, on_done, on_record, start_state
from tunescout.study.messages import TrialEvent, TrialPayload, TrialSummary
from tunescout.stopping.policies import build_stopping
from tunescout.study.spec import DatasetSpec, StudySpec
from tunescout.study.store import open_store
from tunescout.train.telemetry import Pause

PLANNED = 100


def _rows(n: int = 3) -> list[dict]:
    return [{"trial_id": f"t{i}", "model": "m", "method": "lora", "dataset": "d", "hparams": {"learning_rate": i},
             "seed": 0, "config": {"model": "m", "learning_rate": i, "eval_at_samples": [50]},
             "run_dir": f"runs/t{i}", "planned_samples": PLANNED, "planned_tokens": 1000} for i in range(n)]


class ScriptedExecutor:
    """Takes payloads and remembers them; events come from the test."""

    def __init__(self, slots: int = 3) -> None:
        self.slots = slots
        self.submitted: list[TrialPayload] = []
        self.live: list[str] = []

    def submit(self, payload: TrialPayload) -> None:
        self.submitted.append(payload)
        self.live.append(payload.trial_id)

    def running(self) -> list[str]:
        return list(self.live)


def _start(stopping: dict, n: int = 3):
    spec = StudySpec(name="s", models=["m"], methods=["lora"],
                     datasets=[DatasetSpec(name="d", train="d.jsonl", eval="e.jsonl", metric="accuracy")],
                     stopping=stopping, store=":memory:")
    store = open_store(":memory:")
    rows = _rows(n)
    store.sync_trials("s", {"name": "s"}, rows)
    state = start_state(spec, store, rows, build_stopping(stopping))
    return state, store


def _trial(store, tid: str) -> dict:
    return next(t for t in store.trials("s") if t["trial_id"] == tid)


def _record(tid: str, step: int, samples: int, kind: str = "record", **extra) -> TrialEvent:
    return TrialEvent(tid, kind, record={"step": step, "samples": samples, "tokens": samples * 10, "loss": 1.0,
                                         "grad_norm": 1.0, "lr": 1e-3, **extra})


def test_launch_fills_the_free_slots_with_resolved_payloads() -> None:
    state, store = _start({"rule": "asha", "rungs": [0.25], "eta": 2})
    executor = ScriptedExecutor(slots=2)
    said: list[str] = []
    launch(state, store, executor, said.append)
    assert len(executor.submitted) == 2 and len(state.pending) == 1
    payload = executor.submitted[0]
    assert payload.config["eval_at_samples"] == [25, 50]  # the rule's rung merged with the trial's own
    assert payload.ask_at == ((25, 1),) and payload.planned_samples == PLANNED and payload.attempt == 1
    assert {t["status"] for t in store.trials("s") if t["trial_id"] in executor.live} == {"running"}
    assert said[0].startswith(f"start {payload.trial_id} lora d")


def test_on_record_stores_it_and_answers_an_ask_with_the_rule_verdict() -> None:
    state, store = _start({"rule": "asha", "rungs": [0.25], "eta": 2, "signal": "metric"})
    launch(state, store, ScriptedExecutor(), lambda _: None)
    assert on_record(state, store, _record("t0", 1, 10)) is None
    assert on_record(state, store, _record("t0", 3, 30, "ask", val_loss=1.0, metrics={"accuracy": 0.9})) is None
    verdict = on_record(state, store, _record("t1", 3, 30, "ask", val_loss=2.0, metrics={"accuracy": 0.1}))
    assert isinstance(verdict, str) and "asha rung 1" in verdict and "rank 2 of 2" in verdict
    assert [r["step"] for r in store.telemetry("t0")] == [1, 3]
    assert state.progress["t0"].evals == [{"samples": 30, "val_loss": 1.0, "metric": 0.9}]
    # a resumed trial sends steps again: the repeated ones replace the old
    on_record(state, store, _record("t0", 2, 20))
    assert [r["step"] for r in state.progress["t0"].telemetry] == [1, 2]


def test_on_done_retries_once_then_fails_and_finishes_the_others() -> None:
    state, store = _start({"rule": "none"})
    launch(state, store, ScriptedExecutor(), lambda _: None)
    said: list[str] = []
    on_done(state, store, TrialEvent("t0", "done", summary=TrialSummary.lost("process died")), said.append)
    assert state.pending[0] == "t0" and state.progress["t0"].status == "pending" and "retrying t0" in said[-1]
    state.pending.remove("t0")
    store.mark_running("t0")
    on_done(state, store, TrialEvent("t0", "done", summary=TrialSummary.lost("process died")), said.append)
    assert _trial(store, "t0")["status"] == "failed" and "t0" not in state.pending
    done = TrialSummary("completed", steps=4, samples=PLANNED, tokens=1000, wall_s=1.0, eval_loss=0.5,
                        metrics={"accuracy": 0.75})
    on_done(state, store, TrialEvent("t1", "done", summary=done), said.append)
    assert _trial(store, "t1")["status"] == "completed" and _trial(store, "t1")["samples"] == PLANNED
    assert {r["name"]: r["value"] for r in store.results("t1")} == {"accuracy": 0.75, "val_loss": 0.5}


def test_a_config_error_is_not_retried() -> None:
    state, store = _start({"rule": "none"})
    launch(state, store, ScriptedExecutor(), lambda _: None)
    bad = TrialSummary("failed", reason="ConfigError: lr", retryable=False)
    on_done(state, store, TrialEvent("t0", "done", summary=bad), lambda _: None)
    assert _trial(store, "t0")["status"] == "failed" and "t0" not in state.pending


def test_promote_pauses_at_the_rung_and_decide_resumes_the_best_once_all_wait() -> None:
    state, store = _start({"rule": "asha", "mode": "promote", "rungs": [0.25], "eta": 2, "signal": "metric"}, n=2)
    state.pending.clear()
    for tid, score in (("t0", 0.2), ("t1", 0.8)):
        store.mark_running(tid)
        state.progress[tid].status = "running"
        verdict = on_record(state, store, _record(tid, 3, 30, "ask", val_loss=1.0, metrics={"accuracy": score}))
        assert verdict == Pause("rung 1")
    on_done(state, store, TrialEvent("t0", "done", summary=TrialSummary("paused", reason="rung 1", steps=3,
                                                                          samples=30)), lambda _: None)
    assert state.pending == [] and _trial(store, "t0")["status"] == "paused"  # t1 still running: not ready
    said: list[str] = []
    on_done(state, store, TrialEvent("t1", "done", summary=TrialSummary("paused", reason="rung 1", steps=3,
                                                                          samples=30)), said.append)
    assert state.pending == ["t1"] and _trial(store, "t0")["status"] == "stopped"
    assert state.decided == {"t0": 1, "t1": 1} and "1 of 2 continue" in said[-1]
    assert decide(state, store, state.cohort_of["t0"], said.append) == []  # decided once, never again
