"""End-to-end runs of the training loop on the tiny model: outputs, phases, divergence, resume."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tunescout.config import DataSource, TrainConfig
from tunescout.demo.tasks import make_rows, write_jsonl
from tunescout.train import read_telemetry, train
from tunescout.train.checkpoint import latest_checkpoint

FIELDS = {"step", "samples", "tokens", "loss", "grad_norm", "lr", "tokens_per_s", "wall_s"}


@pytest.fixture(scope="module")
def data_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("data")
    return {
        "arithmetic": str(write_jsonl(make_rows("arithmetic", 48, seed=0), root / "arithmetic.jsonl")),
        "sentiment": str(write_jsonl(make_rows("sentiment", 32, seed=0), root / "sentiment.jsonl")),
        "reverse": str(write_jsonl(make_rows("reverse", 32, seed=0), root / "reverse.jsonl")),
    }


def _config(model: Path, files: dict[str, str], out: Path, **kw) -> TrainConfig:
    base = dict(model=str(model), data=[DataSource(files["arithmetic"]), DataSource(files["reverse"])],
                batch_size=8, max_tokens_per_micro_batch=256, max_length=128, learning_rate=1e-3,
                output_dir=str(out), progress=False)
    base.update(kw)
    return TrainConfig.of(**base)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_train_writes_telemetry_result_and_loadable_model(tiny_model_dir, data_files, tmp_path, method) -> None:
    cfg = _config(tiny_model_dir, data_files, tmp_path / "run", method=method, epochs=2, eval_fraction=0.1)
    result = train(cfg)
    assert result.status == "completed"
    records = read_telemetry(tmp_path / "run" / "telemetry.jsonl")
    assert len(records) == result.steps == result.total_steps > 5
    assert FIELDS <= set(records[0])
    assert [r["step"] for r in records] == list(range(1, len(records) + 1))
    assert all(b["samples"] > a["samples"] and b["tokens"] > a["tokens"] for a, b in zip(records, records[1:]))
    assert records[-1]["loss"] < records[0]["loss"]  # it learns
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["status"] == "completed" and saved["eval_loss"] is not None
    assert {"torch", "transformers", "peft"} <= set(saved["versions"])

    from transformers import AutoModelForCausalLM

    if method == "full":
        reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    else:
        from peft import AutoPeftModelForCausalLM

        assert (tmp_path / "run" / "model" / "adapter_config.json").exists()
        reloaded = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    ids = torch.tensor([[1, 5, 9, 12]])
    assert torch.isfinite(reloaded(input_ids=ids).logits).all()


def test_lora_merge_saves_a_plain_model(tiny_model_dir, data_files, tmp_path) -> None:
    cfg = _config(tiny_model_dir, data_files, tmp_path / "run", method="lora", max_steps=2, merge_lora=True)
    assert train(cfg).status == "completed"
    from transformers import AutoModelForCausalLM

    assert not (tmp_path / "run" / "model" / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    assert not any("lora" in n for n, _ in model.named_parameters())


def test_phased_runs_phase_after_phase_stacked_mixes(tiny_model_dir, data_files, tmp_path) -> None:
    data = [DataSource(data_files["arithmetic"], phase=1), DataSource(data_files["sentiment"], phase=2, epochs=2)]
    phased = train(_config(tiny_model_dir, data_files, tmp_path / "phased", data=data, strategy="phased"))
    stacked = train(_config(tiny_model_dir, data_files, tmp_path / "stacked", data=data, strategy="stacked"))
    ph = read_telemetry(tmp_path / "phased" / "telemetry.jsonl")
    assert [r["phase"] for r in ph] == [1] * 6 + [2] * 8  # 48/8 steps, then 2 epochs of 32/8
    assert ph[-1]["samples"] == 48 + 64
    st = read_telemetry(tmp_path / "stacked" / "telemetry.jsonl")
    assert {r["phase"] for r in st} == {0} and st[-1]["samples"] == 80
    assert phased.status == stacked.status == "completed"


def test_divergence_is_recorded_and_ends_the_run(tiny_model_dir, data_files, tmp_path, monkeypatch) -> None:
    import tunescout.train.world as world

    real = world.accumulate_gradients
    calls = {"n": 0}

    def nan_on_third(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(world, "accumulate_gradients", nan_on_third)
    result = train(_config(tiny_model_dir, data_files, tmp_path / "run", max_steps=10))
    assert result.status == "diverged" and "step 3" in result.reason
    records = read_telemetry(tmp_path / "run" / "telemetry.jsonl")
    assert len(records) == 3 and records[-1]["loss"] is None
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "diverged"
    assert not (tmp_path / "run" / "model").exists()


def test_exploding_learning_rate_diverges_for_real(tiny_model_dir, data_files, tmp_path) -> None:
    cfg = _config(tiny_model_dir, data_files, tmp_path / "run", learning_rate=1e12, grad_clip=None, epochs=3)
    result = train(cfg)
    assert result.status == "diverged"
    last = read_telemetry(tmp_path / "run" / "telemetry.jsonl")[-1]
    assert last["loss"] is None or last["grad_norm"] is None or not math.isfinite(last["loss"])


def test_early_stop_hook_ends_the_run_as_stopped(tiny_model_dir, data_files, tmp_path) -> None:
    seen = []

    def hook(record):
        seen.append(record.step)
        return "rung 1: outside top 1/3" if record.step == 4 else None

    result = train(_config(tiny_model_dir, data_files, tmp_path / "run"), early_stop=hook)
    assert result.status == "stopped" and result.reason == "rung 1: outside top 1/3"
    assert seen == [1, 2, 3, 4] and result.steps == 4
    assert (tmp_path / "run" / "model" / "config.json").exists()


def test_a_checkpoint_never_gets_ahead_of_the_hook(tiny_model_dir, data_files, tmp_path) -> None:
    """The hook (in a sweep: the record going to the driver) runs before the checkpoint of its
    step, so a driver that dies on receiving step N leaves no checkpoint of step N, and the
    resumed trial redoes N instead of skipping a step the store never recorded."""
    run = tmp_path / "run"
    seen = []

    def hook(record):
        latest = latest_checkpoint(run)
        seen.append((record.step, latest.name if latest else None))
        if record.step == 4:
            raise BrokenPipeError("driver gone")

    with pytest.raises(BrokenPipeError):
        train(_config(tiny_model_dir, data_files, run, max_steps=8, checkpoint_every=2), early_stop=hook)
    assert seen == [(1, None), (2, None), (3, "step-0000002"), (4, "step-0000002")]
    assert latest_checkpoint(run).name == "step-0000002"


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(next((run_dir / "model").glob("*.safetensors"))))


@pytest.mark.parametrize("method", ["full", "lora"])
def test_crash_and_resume_matches_uninterrupted_run(tiny_model_dir, data_files, tmp_path, method) -> None:
    kw = dict(method=method, max_steps=8, checkpoint_every=3)  # LoRA dropout stays on: RNG is restored
    full = train(_config(tiny_model_dir, data_files, tmp_path / "a", **kw))

    def crash(record):
        if record.step == 5:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(_config(tiny_model_dir, data_files, tmp_path / "b", **kw), early_stop=crash)
    assert json.loads((tmp_path / "b" / "result.json").read_text())["status"] == "failed"
    resumed = train(_config(tiny_model_dir, data_files, tmp_path / "b", **kw), resume=True)
    assert full.status == resumed.status == "completed"
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    ra, rb = (read_telemetry(tmp_path / d / "telemetry.jsonl") for d in ("a", "b"))
    assert [r["loss"] for r in ra] == [r["loss"] for r in rb]
    assert [r["samples"] for r in ra] == [r["samples"] for r in rb]


def test_sigkill_and_resume_matches_uninterrupted_run(tiny_model_dir, data_files, tmp_path) -> None:
    """Kill the training process for real (SIGKILL, no cleanup) between checkpoints; resume with the CLI.

    The kill lands at step 5 with checkpoints every 3 steps, so the resumed run redoes steps 4
    and 5; LoRA dropout draws from torch's RNG on every forward, so they only come out the
    same if the checkpoint restored the generator state exactly.
    """
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(textwrap.dedent(f"""
        model: {tiny_model_dir}
        method: lora
        lora: {{dropout: 0.1}}
        data: [{data_files['arithmetic']}, {data_files['sentiment']}]
        batch_size: 8
        max_tokens_per_micro_batch: 256
        max_length: 128
        learning_rate: 1.0e-3
        max_steps: 8
        checkpoint_every: 3
        progress: false
    """))
    killed = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import os, signal
        from tunescout.config import load_config
        from tunescout.train import train
        def kill(record):
            if record.step == 5:
                os.kill(os.getpid(), signal.SIGKILL)
        train(load_config({str(cfg_path)!r}, ["output_dir={killed}"]), early_stop=kill)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not (killed / "result.json").exists()  # died without cleanup
    assert latest_checkpoint(killed).name == "step-0000003"  # between checkpoints: steps 4-5 are lost
    assert [r["step"] for r in read_telemetry(killed / "telemetry.jsonl")] == [1, 2, 3, 4, 5]

    from tunescout.cli import main

    assert main(["train", "--resume-dir", str(killed)]) == 0
    assert main(["train", str(cfg_path), f"output_dir={tmp_path / 'clean'}"]) == 0
    a, b = _weights(tmp_path / "clean"), _weights(killed)  # the LoRA adapter: every trainable tensor
    assert a.keys() == b.keys() and any("lora" in name for name in a)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    ra, rb = (read_telemetry(d / "telemetry.jsonl") for d in (tmp_path / "clean", killed))
    assert [r["step"] for r in rb] == list(range(1, 9))  # each step once, the redone ones included
    assert [r["loss"] for r in ra] == [r["loss"] for r in rb]
    assert [r["grad_norm"] for r in ra] == [r["grad_norm"] for r in rb]


@pytest.mark.parametrize(("mixed", "weights"), [(True, torch.float32), (False, torch.bfloat16)])
def test_bf16_mixed_precision_keeps_float32_master_weights(tiny_model_dir, data_files, tmp_path, mixed, weights) -> None:
    cfg = _config(tiny_model_dir, data_files, tmp_path / "run", dtype="bfloat16", mixed_precision=mixed, max_steps=2)
    assert train(cfg).status == "completed"
    saved = _weights(tmp_path / "run")
    assert {t.dtype for t in saved.values()} == {weights}


def test_eval_data_at_sample_counts_and_task_eval(tiny_model_dir, data_files, tmp_path) -> None:
    seen, calls = [], []

    def task_eval(model, tokenizer):
        calls.append(model.training)
        return {"calls": float(len(calls))}

    cfg = _config(tiny_model_dir, data_files, tmp_path / "run", eval_data=[DataSource(data_files["sentiment"])],
                  eval_at_samples=[20, 40], max_steps=8)
    result = train(cfg, early_stop=lambda r: seen.append(r) and None, task_eval=task_eval)
    evaluated = [(r.step, r.samples, r.metrics) for r in seen if r.val_loss is not None]
    # the first records at or past 20 and 40 samples carry the validation loss and task metrics
    assert evaluated == [(3, 24, {"calls": 1.0}), (5, 40, {"calls": 2.0})]
    assert all(r.metrics is None for r in seen if r.val_loss is None)
    evals = [json.loads(x) for x in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    assert [(e["samples"], e["calls"]) for e in evals] == [(24, 1.0), (40, 2.0), (64, 3.0)]  # rungs and the end
    assert result.eval_loss == pytest.approx(evals[-1]["val_loss"])
    assert result.metrics == {"calls": 3.0}
    assert result.data["eval_samples"] == 32


@pytest.mark.parametrize(("device", "attn", "settings", "expected"), [
    # None: rows are the cost model's choice per batch (stepcost.py); the budget is the memory bound,
    # cut to ~1k tokens on a CPU, which gains nothing from larger micro-batches.
    ("cpu", "sdpa", {"max_length": 128, "max_tokens_per_micro_batch": 4096}, (None, 1024)),
    ("cpu", "sdpa", {"max_length": 2048, "max_tokens_per_micro_batch": 16384}, (None, 2048)),  # one long row fits
    ("cpu", "sdpa", {"max_length": 128, "max_tokens_per_micro_batch": 512}, (None, 512)),  # a smaller budget stays
    ("cuda", "sdpa", {"max_length": 128, "max_tokens_per_micro_batch": 4096}, (None, 4096)),
    ("cuda", "flash_attention_2", {"max_length": 128, "max_tokens_per_micro_batch": 4096}, (None, 4096)),
    ("cpu", "sdpa", {"max_length": 128, "max_tokens_per_micro_batch": 4096, "max_tokens_per_row": 512}, (512, 4096)),
])
def test_packing_shape_follows_kernel_and_device(device, attn, settings, expected) -> None:
    from tunescout.train.setup import packing_shape

    assert packing_shape(TrainConfig.of(**settings), attn, torch.device(device)) == expected


def test_a_dead_run_is_recorded_diverged_not_completed(tiny_model_dir, data_files, tmp_path) -> None:
    """At a learning rate of 1e6 the weights saturate after one step: the loss is finite but the
    gradient norm is exactly 0 from then on (and the loss sits at ln(vocabulary)). It must not
    train on to be recorded ``completed``."""
    result = train(_config(tiny_model_dir, data_files, tmp_path / "run", learning_rate=1e6, max_steps=40))
    assert result.status == "diverged", result
    assert result.reason.startswith("dead run:") and result.steps < 40
    records = read_telemetry(tmp_path / "run" / "telemetry.jsonl")
    assert all(math.isfinite(r["loss"]) for r in records)


def test_health_watch_tells_dead_from_a_fresh_model() -> None:
    from tunescout.train.health import HealthWatch

    uniform = math.log(100)
    fresh = HealthWatch(vocab_size=100)  # near ln(V) but moving: learning
    assert all(fresh.check(s, uniform - 0.01 * s, 1.0) is None for s in range(1, 20))
    flat = HealthWatch(vocab_size=100)
    verdicts = [flat.check(s, uniform, 0.5) for s in range(1, 6)]
    assert verdicts[:4] == [None] * 4 and "ln(vocabulary)" in verdicts[4]
    zero = HealthWatch()
    assert [zero.check(s, 2.0, 0.0) is None for s in range(1, 6)] == [True] * 4 + [False]
    assert HealthWatch().check(1, float("nan"), 1.0).startswith("non-finite")


def test_resuming_a_finished_run_keeps_its_totals(tiny_model_dir, data_files, tmp_path) -> None:
    cfg = _config(tiny_model_dir, data_files, tmp_path / "run", max_steps=4, checkpoint_every=2)
    first = train(cfg)
    again = train(cfg, resume=True)
    assert again.status == "completed"
    for key in ("steps", "samples", "tokens", "total_steps", "final_loss"):
        assert getattr(again, key) == getattr(first, key), key
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["steps"] == 4 and saved["tokens"] == first.tokens and saved["final_loss"] == first.final_loss
