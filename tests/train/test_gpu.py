"""The CUDA path on a tiny Llama: fused AdamW, bf16 autocast over float32 master weights, flash
attention's varlen kernels fed explicit boundaries, flex attention chosen by ``auto`` without
flash attention, compile, Liger, gradient checkpointing, MFU.

Every test is skipped without a CUDA GPU (flash attention and Liger tests also without their
packages); ``benchmarks/gpu_check.sh`` runs them on a GPU machine.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from samples import random_samples

from tunescout.config import DataSource, TrainConfig
from tunescout.data.packing import collate_packed, plan_micro_batches
from tunescout.data.tokenize import TokenizedSample
from tunescout.demo.tasks import make_rows, write_jsonl
from tunescout.train import read_telemetry, train
from tunescout.train.accel import compile_model, make_optimizer
from tunescout.train.loss import accumulate_gradients, per_sample_losses
from tunescout.train.models import load_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
needs_flash = pytest.mark.skipif(importlib.util.find_spec("flash_attn") is None, reason="needs flash_attn")
needs_liger = pytest.mark.skipif(importlib.util.find_spec("liger_kernel") is None, reason="needs liger-kernel")
CUDA = torch.device("cuda")


def _samples(n: int, vocab: int, seed: int = 0, max_len: int = 60) -> list[TokenizedSample]:
    return random_samples(n, vocab, seed, max_len)


def _step(model: torch.nn.Module, samples, autocast=torch.bfloat16, **plan) -> tuple[float, torch.Tensor]:
    batches = plan_micro_batches(samples, max_tokens=plan.pop("max_tokens", 256), **plan)
    loss = accumulate_gradients(model, batches, sum(s.num_loss_tokens for s in samples), CUDA, autocast)
    grads = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.requires_grad])
    return loss, grads


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_jsonl(make_rows("arithmetic", 48, seed=0), tmp_path_factory.mktemp("data") / "a.jsonl"))


def test_fused_adamw_steps_on_cuda(tiny_model_dir: Path) -> None:
    model = load_model(str(tiny_model_dir), device=CUDA)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    assert opt.defaults["fused"] is True
    before = params[0].detach().clone()
    _step(model, _samples(4, model.config.vocab_size))
    opt.step()
    assert not torch.equal(before, params[0])


def test_train_on_cuda_is_bf16_autocast_over_float32_weights(tiny_model_dir, data_file, tmp_path) -> None:
    from safetensors.torch import load_file

    run = tmp_path / "run"
    cfg = TrainConfig.of(model=str(tiny_model_dir), data=[DataSource(data_file)], batch_size=8, max_length=128,
                      max_tokens_per_micro_batch=1024, learning_rate=1e-3, max_steps=3, device="cuda",
                      output_dir=str(run), progress=False)
    result = train(cfg)
    assert result.status == "completed"
    resolved = json.loads((run / "run.json").read_text())["resolved"]
    assert resolved["device"] == "cuda" and resolved["dtype"] == "bfloat16"
    weights = load_file(str(run / "model" / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float32}  # master weights stayed float32
    records = read_telemetry(run / "telemetry.jsonl")
    name = torch.cuda.get_device_name()
    from tunescout.train.flops import peak_bf16_tflops_for

    if peak_bf16_tflops_for(name) is not None:
        assert all(r["mfu"] is not None and 0 < r["mfu"] < 1 for r in records), name


@needs_flash
def test_flash_varlen_with_explicit_boundaries_matches_each_sample_alone(tiny_model_dir) -> None:
    model = load_model(str(tiny_model_dir), dtype=torch.bfloat16, attn_implementation="flash_attention_2",
                       device=CUDA).eval()
    samples = _samples(7, model.config.vocab_size)
    packed = collate_packed(samples, boundaries=True).to(CUDA)
    inferred = collate_packed(samples).to(CUDA)  # transformers infers the boundaries from the position ids
    alone = [per_sample_losses(model, collate_packed([s], boundaries=True).to(CUDA))[0] for s in samples]
    explicit = per_sample_losses(model, packed)
    assert max(alone) - min(alone) > 1e-2
    torch.testing.assert_close(torch.tensor(explicit), torch.tensor(alone), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(torch.tensor(explicit), torch.tensor(per_sample_losses(model, inferred)),
                               rtol=1e-3, atol=1e-3)


@needs_flash
def test_train_with_flash_attention_plans_one_row_with_boundaries(tiny_model_dir, data_file, tmp_path) -> None:
    run = tmp_path / "run"
    cfg = TrainConfig.of(model=str(tiny_model_dir), data=[DataSource(data_file)], batch_size=8, max_length=128,
                      learning_rate=1e-3, max_steps=2, device="cuda", attn_implementation="auto",
                      output_dir=str(run), progress=False, save_model=False)
    assert train(cfg).status == "completed"
    resolved = json.loads((run / "run.json").read_text())["resolved"]
    assert resolved["attn_implementation"] == "flash_attention_2" and resolved["max_tokens_per_row"] is None
    assert all(r["pad_tokens"] == 0 for r in read_telemetry(run / "telemetry.jsonl"))


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="auto picks flash attention here")
def test_auto_trains_with_flex_attention_without_flash_attn(tiny_model_dir, data_file, tmp_path) -> None:
    run = tmp_path / "run"
    cfg = TrainConfig.of(model=str(tiny_model_dir), data=[DataSource(data_file)], batch_size=8, max_length=128,
                      learning_rate=1e-3, max_steps=2, device="cuda", attn_implementation="auto",
                      output_dir=str(run), progress=False, save_model=False)
    result = train(cfg)
    assert result.status == "completed" and result.final_loss == result.final_loss  # not NaN
    assert json.loads((run / "run.json").read_text())["resolved"]["attn_implementation"] == "flex_attention"


def test_gradient_checkpointing_on_cuda_keeps_loss_and_gradients(tiny_model_dir) -> None:
    results = []
    for checkpointing in (False, True):
        model = load_model(str(tiny_model_dir), gradient_checkpointing=checkpointing, device=CUDA)
        results.append(_step(model, _samples(6, model.config.vocab_size, seed=1), row_tokens=64))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    torch.testing.assert_close(grads_a, grads_b, rtol=1e-3, atol=1e-5)


def test_compile_on_cuda_keeps_the_loss(tiny_model_dir) -> None:
    model = load_model(str(tiny_model_dir), device=CUDA)
    samples = _samples(6, model.config.vocab_size, seed=2)
    eager_loss, eager_grads = _step(model, samples, autocast=None, row_tokens=64)
    model.zero_grad(set_to_none=True)
    compile_model(model)  # inductor
    loss, grads = _step(model, samples, autocast=None, row_tokens=64)
    assert loss == pytest.approx(eager_loss, rel=1e-4)
    torch.testing.assert_close(grads, eager_grads, rtol=1e-3, atol=1e-5)


@needs_liger
def test_liger_keeps_the_loss(tiny_model_dir) -> None:
    model = load_model(str(tiny_model_dir), device=CUDA)
    samples = _samples(6, model.config.vocab_size, seed=3)
    reference = _step(model, samples, autocast=None)[0]
    fused = _step(load_model(str(tiny_model_dir), device=CUDA, liger=True), samples, autocast=None)[0]
    assert fused == pytest.approx(reference, rel=1e-4)
