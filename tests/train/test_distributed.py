"""One run on two CPU processes (gloo, FSDP2) trains as one process does: losses, norms, weights, resume.

The multi-process tests go through :func:`spawn_trial` (torchrun in a subprocess) or the real CLI
under torchrun; every launch has a timeout, so a hang fails the test instead of stalling the suite,
and spawn_trial ends its process tree on the way out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tunescout.config import ConfigError, DataSource, LoraConfig, TrainConfig
from tunescout.demo.tasks import make_rows, write_jsonl
from tunescout.train import read_telemetry, train
from tunescout.train.checkpoint import WORLD_FILE, latest_checkpoint, load_checkpoint
from tunescout.train.distributed import TaskEvalSpec, check_world_size, deal_samples, rank_env, spawn_trial
from tunescout.train.telemetry import Pause

LAUNCH_TIMEOUT_S = 300
PROBE_IDS = [1, 5, 9, 12, 40, 41]
# The ranks import this module for the task_eval factory below.
RANK_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


def probe_eval(ids: list[int]):
    """A task_eval factory (importable by the ranks): a number that moves with every weight."""

    def evaluate(model, tokenizer) -> dict[str, float]:
        device = next(model.parameters()).device
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids], device=device)).logits
        return {"probe": float(logits.float().abs().mean())}

    return evaluate


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_jsonl(make_rows("arithmetic", 48, seed=0), tmp_path_factory.mktemp("data") / "arith.jsonl"))


def _config(model: Path, data: str, out: Path, **kw) -> TrainConfig:
    # No dropout anywhere: ranks draw their own masks, so only a dropout-free run can match one process.
    base = dict(model=str(model), data=[DataSource(data)], batch_size=8, max_tokens_per_micro_batch=256,
                max_length=128, learning_rate=1e-3, output_dir=str(out), progress=False,
                lora=LoraConfig(r=4, alpha=8, dropout=0.0))
    base.update(kw)
    return TrainConfig.of(**base)


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def _same_records(one: Path, two: Path, steps: int) -> None:
    a, b = read_telemetry(one / "telemetry.jsonl"), read_telemetry(two / "telemetry.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, steps + 1))
    for ra, rb in zip(a, b):
        assert (ra["samples"], ra["tokens"], ra["loss_tokens"]) == (rb["samples"], rb["tokens"], rb["loss_tokens"])
        for key in ("loss", "grad_norm", "lr"):
            assert _rel(ra[key], rb[key]) < 1e-5, (ra["step"], key, ra[key], rb[key])
        if ra.get("val_loss") is not None or rb.get("val_loss") is not None:
            assert _rel(ra["val_loss"], rb["val_loss"]) < 1e-5, (ra["step"], ra["val_loss"], rb["val_loss"])


def _same_weights(one: Path, two: Path) -> None:
    from safetensors.torch import load_file

    name = "adapter_model.safetensors" if (one / "adapter_model.safetensors").exists() else "model.safetensors"
    a, b = load_file(one / name), load_file(two / name)
    assert a.keys() == b.keys() and a
    for key in a:
        scale = max(float(a[key].norm()), 1e-12)
        assert float((a[key] - b[key]).norm()) / scale < 1e-4, key


# --- pieces, in this process ---

def test_samples_are_dealt_by_tokens_deterministically() -> None:
    lengths = [50, 10, 40, 30, 20, 20, 5]
    shares = deal_samples(lengths, 2)
    assert sorted(i for s in shares for i in s) == list(range(len(lengths)))
    loads = [sum(lengths[i] for i in s) for s in shares]
    assert abs(loads[0] - loads[1]) <= max(lengths)
    assert shares == deal_samples(lengths, 2)
    assert deal_samples([3], 2) == [[0], []]  # fewer samples than ranks: a rank may get none


def test_rank_env_reads_the_launcher_environment() -> None:
    assert rank_env({}) is None and rank_env({"WORLD_SIZE": "1", "RANK": "0"}) is None
    env = rank_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert (env.rank, env.size, env.local_rank) == (3, 4, 1)
    with pytest.raises(ConfigError, match="RANK is not set"):
        rank_env({"WORLD_SIZE": "2"})


def test_spawn_trial_takes_task_eval_as_an_importable_factory(tmp_path) -> None:
    with pytest.raises(ValueError, match="package.module:function"):
        TaskEvalSpec("no_colon")
    assert TaskEvalSpec("test_distributed:probe_eval", {"ids": [1, 2]}).build() is not None
    with pytest.raises(TypeError, match="TaskEvalSpec"):
        spawn_trial(TrainConfig.of(output_dir=str(tmp_path)), 2, task_eval=lambda m, t: {})


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoint_metadata_that_would_run_code_is_refused(tmp_path) -> None:
    import pickle

    import tunescout.train.distributed.sharded as sharded

    (tmp_path / ".metadata").write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(ValueError, match="not a safe tunescout checkpoint file.*not allowed"):
        sharded._safe_reader(tmp_path).read_metadata()


# --- two ranks against one process ---

@pytest.mark.parametrize("method", ["full", "lora"])
def test_two_ranks_train_as_one_process_and_stop_together(tiny_model_dir, data_file, tmp_path, method) -> None:
    kw = dict(method=method, max_steps=4, eval_fraction=0.1, eval_every=1)
    spec = TaskEvalSpec("test_distributed:probe_eval", {"ids": PROBE_IDS})
    one = train(_config(tiny_model_dir, data_file, tmp_path / "one", **kw), task_eval=probe_eval(PROBE_IDS),
                early_stop=lambda r: "two steps" if r.step >= 2 else None)
    seen: list[int] = []

    def stop_at_two(record) -> str | None:
        seen.append(record.step)
        return "two steps" if record.step >= 2 else None

    two = spawn_trial(_config(tiny_model_dir, data_file, tmp_path / "two", **kw), 2, early_stop=stop_at_two,
                      task_eval=spec, timeout_s=LAUNCH_TIMEOUT_S, env=RANK_ENV)
    assert two.status == one.status == "stopped", two.reason
    assert two.reason == "two steps" and seen == [1, 2] and two.steps == 2
    _same_records(tmp_path / "one", tmp_path / "two", 2)
    _same_weights(tmp_path / "one" / "model", tmp_path / "two" / "model")
    assert _rel(one.eval_loss, two.eval_loss) < 1e-5
    assert _rel(one.metrics["probe"], two.metrics["probe"]) < 1e-4  # task_eval on rank 0's gathered replica
    evals = [json.loads(line) for line in (tmp_path / "two" / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [1, 2, 2]  # once per rank 0, not once per rank
    saved = json.loads((tmp_path / "two" / "result.json").read_text())
    assert saved["status"] == "stopped" and saved["params"] == one.params
    assert json.loads((tmp_path / "two" / "run.json").read_text())["resolved"]["world_size"] == 2


def test_resume_from_a_sharded_checkpoint_on_the_same_number_of_ranks_only(tiny_model_dir, data_file,
                                                                            tmp_path) -> None:
    kw = dict(max_steps=4, checkpoint_every=2)
    run = tmp_path / "two"
    train(_config(tiny_model_dir, data_file, tmp_path / "one", **kw))
    paused = spawn_trial(_config(tiny_model_dir, data_file, run, **kw), 2,
                         early_stop=lambda r: Pause("rung") if r.step == 2 else None, timeout_s=LAUNCH_TIMEOUT_S,
                         env=RANK_ENV)
    assert paused.status == "paused" and paused.steps == 2, paused.reason
    checkpoint = latest_checkpoint(run)
    assert checkpoint is not None and checkpoint.name == "step-0000002"
    assert json.loads((checkpoint / WORLD_FILE).read_text())["world_size"] == 2
    assert {p.name for p in (checkpoint / "dcp").iterdir()} == {".metadata", "__0_0.distcp", "__1_0.distcp"}

    # Another world size is refused, before anything is touched: one process here, two for a one-process run.
    with pytest.raises(ConfigError, match="trained on 2 process"):
        train(_config(tiny_model_dir, data_file, run, **kw), resume=True)
    with pytest.raises(ValueError, match="sharded checkpoint"):
        load_checkpoint(checkpoint, torch.nn.Linear(1, 1), None, None)
    with pytest.raises(ConfigError, match="trained on 1 process"):
        check_world_size(tmp_path / "one", 2)
    assert latest_checkpoint(run) == checkpoint

    # The CLI under torchrun continues it to the end, exactly as the uninterrupted single process ran.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "tunescout.cli", "train", "--resume-dir", str(run)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S, env=RANK_ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout[done.stdout.index("{"):])["status"] == "completed"  # one summary, rank 0's
    _same_records(tmp_path / "one", run, 4)
    _same_weights(tmp_path / "one" / "model", run / "model")
