"""A trial process never outlives its sweep driver, by either of the two mechanisms."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from procs import alive

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.time() + seconds
    while alive(pid) and time.time() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def _trial_code(driver_pid: int | None) -> str:
    return textwrap.dedent(f"""
        import time
        from tunescout.study.worker import _die_with_driver
        _die_with_driver({driver_pid!r})
        print("armed", flush=True)
        time.sleep(120)
    """)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_the_kernel_kills_a_trial_whose_parent_dies() -> None:
    """No pipe, no watcher (``driver_pid`` None): only the parent-death signal can end it."""
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", {_trial_code(None)!r}], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "armed"
        print(child.pid, flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True, env=ENV)
    trial = int(parent.stdout.readline())
    assert alive(trial)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    assert _gone_within(trial, 5), "the trial outlived its parent"


def test_the_watcher_kills_a_trial_whose_driver_dies() -> None:
    """The driver is not the trial's parent (the parent, this test, stays alive): the watcher thread acts."""
    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    trial = subprocess.Popen([sys.executable, "-c", _trial_code(driver.pid)], stdout=subprocess.PIPE, text=True,
                             env=ENV)
    try:
        assert trial.stdout.readline().strip() == "armed"
        time.sleep(1.0)
        assert trial.poll() is None  # a live driver keeps it alive
        driver.kill()
        driver.wait()
        assert _gone_within(trial.pid, 5), "the trial outlived its driver"
        assert trial.wait() == -signal.SIGKILL
    finally:
        for p in (driver, trial):
            if p.poll() is None:
                p.kill()


class ListChannel:
    """A channel that keeps what the trial sends and answers asks from a function."""

    def __init__(self, answer) -> None:
        self.messages: list[tuple[str, dict]] = []
        self.answer = answer

    def send(self, record: dict) -> None:
        self.messages.append(("record", record))

    def ask(self, record: dict):
        self.messages.append(("ask", record))
        return self.answer(record)

    def done(self, summary) -> None:
        self.messages.append(("done", summary))


def test_a_trial_on_two_ranks_reports_through_the_same_channel(tiny_model_dir: Path, tmp_path: Path) -> None:
    """``gpus_per_trial: 2`` trains a trial on two processes (gloo on CPU): rank 0's records reach
    the trial's channel, asks get their verdict, and a stop verdict ends every rank."""
    from tunescout.demo.tasks import make_rows, write_jsonl
    from tunescout.study.messages import TrialPayload
    from tunescout.study.worker import run_trial

    write_jsonl(make_rows("sentiment", 32, seed=0), tmp_path / "train.jsonl")
    config = {"model": str(tiny_model_dir), "method": "full", "data": [{"path": str(tmp_path / "train.jsonl")}],
              "output_dir": str(tmp_path / "run"), "epochs": 1, "batch_size": 4, "max_length": 64,
              "max_tokens_per_micro_batch": 256, "learning_rate": 1e-3, "progress": False, "checkpoint_every": 2}
    channel = ListChannel(lambda r: "rung 1: rank 2 of 2" if r["samples"] >= 12 else None)
    run_trial(channel, TrialPayload("t", config, ask_at=((12, 1),), ranks=2, threads=1))
    kinds = [(k, d.get("step") if k != "done" else None) for k, d in channel.messages]
    assert kinds == [("record", 1), ("ask", 2), ("ask", 3), ("done", None)]
    done = channel.messages[-1][1]
    assert (done.status, done.reason, done.steps) == ("stopped", "rung 1: rank 2 of 2", 3), done
    assert json.loads((tmp_path / "run" / "run.json").read_text())["resolved"]["world_size"] == 2


_PRELOADED_TRIALS = textwrap.dedent("""
    import json, sys
    import tunescout.study.worker as worker
    from tunescout.demo.tasks import make_rows, write_jsonl
    from tunescout.study.messages import TrialPayload

    class Channel:
        def send(self, record):
            pass
        def ask(self, record):
            return None
        def done(self, summary):
            self.last = summary

    model, folder = sys.argv[1], sys.argv[2]
    write_jsonl(make_rows("sentiment", 16, seed=0), f"{folder}/train.jsonl")
    write_jsonl(make_rows("sentiment", 4, seed=1), f"{folder}/eval.jsonl")
    loaded = {name.partition(".")[0] for name in sys.modules}
    out = {}
    for method in ("full", "lora"):
        config = {"model": model, "method": method, "data": [{"path": f"{folder}/train.jsonl"}],
                  "output_dir": f"{folder}/{method}", "epochs": 1, "batch_size": 4, "max_length": 64,
                  "max_tokens_per_micro_batch": 256, "learning_rate": 1e-3, "progress": False}
        task = {"eval": f"{folder}/eval.jsonl", "metric": "accuracy", "max_new_tokens": 4, "eval_limit": None}
        channel = Channel()
        worker.run_trial(channel, TrialPayload(method, config, task))
        out[method] = channel.last.status
    out["new"] = sorted({name.partition(".")[0] for name in sys.modules} - loaded)
    print(json.dumps(out))
""")


def test_a_trial_forked_from_the_preloaded_worker_imports_no_new_package(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Trials fork from a process that imported ``tunescout.study.worker``; a package a trial
    imports after the fork costs every trial its import time (peft: ~3 s, which had made the
    demo's sweep half imports)."""
    done = subprocess.run([sys.executable, "-c", _PRELOADED_TRIALS, str(tiny_model_dir), str(tmp_path)], env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert (out["full"], out["lora"]) == ("completed", "completed"), out
    assert out["new"] == [], f"imported by a trial after the preload: {out['new']}"
