"""The GPU-path switches on CPU: optimizer choice, Liger's missing-package path, compile,
gradient checkpointing, config keys and identity, and the packing refusal on a tiny Bloom."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from samples import random_samples

from tunescout.config import ConfigError, DataSource, TrainConfig, build_config
from tunescout.data.packing import collate_packed, plan_micro_batches
from tunescout.data.tokenize import TokenizedSample
from tunescout.demo.tasks import make_rows, write_jsonl
from tunescout.train import accel, read_telemetry, train
from tunescout.train.accel import (
    LIGER_HINT,
    adamw_kwargs,
    check_kernels,
    compile_model,
    make_optimizer,
    packing_refusal,
    uses_varlen_kernel,
)
from tunescout.train.identity import config_hash, run_identity
from tunescout.train.loss import accumulate_gradients, per_sample_losses
from tunescout.train.models import load_model


def _samples(n: int, vocab: int, seed: int = 0, max_len: int = 40) -> list[TokenizedSample]:
    return random_samples(n, vocab, seed, max_len)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_jsonl(make_rows("arithmetic", 24, seed=0), tmp_path_factory.mktemp("data") / "a.jsonl"))


def _config(model: Path | str, data: str, out: Path, **kw) -> TrainConfig:
    base = dict(model=str(model), data=[DataSource(data)], batch_size=8, max_tokens_per_micro_batch=256,
                max_length=64, learning_rate=1e-3, max_steps=2, output_dir=str(out), progress=False,
                save_model=False)
    return TrainConfig.of(**{**base, **kw})


# --- optimizer -----------------------------------------------------------------------------


def test_adamw_is_fused_on_cuda_params_only() -> None:
    on = lambda kind: SimpleNamespace(device=torch.device(kind))  # noqa: E731 - no GPU needed to decide
    assert adamw_kwargs([on("cuda"), on("cuda")]) == {"fused": True}
    assert adamw_kwargs([on("cpu")]) == {}
    assert adamw_kwargs([on("cuda"), on("cpu")]) == {}  # mixed devices: the fused kernel would refuse


def test_make_optimizer_on_cpu_keeps_the_default_and_decays_matrices_only() -> None:
    params = [torch.nn.Parameter(torch.zeros(3, 3)), torch.nn.Parameter(torch.zeros(3))]
    opt = make_optimizer(params, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert not opt.defaults.get("fused")


# --- Liger: a missing package fails at the start, with the install hint ------------------------


@pytest.mark.skipif(importlib.util.find_spec("liger_kernel") is not None, reason="liger-kernel is installed")
def test_liger_without_the_package_fails_before_any_data_is_read(tiny_model_dir, tmp_path) -> None:
    cfg = _config(tiny_model_dir, str(tmp_path / "missing.jsonl"), tmp_path / "run", liger=True)
    with pytest.raises(ImportError, match=r"pip install 'tunescout\[liger\]'"):
        train(cfg)  # the data file does not exist: an ImportError proves the check came first
    with pytest.raises(ImportError, match=r"tunescout\[liger\]"):
        load_model(str(tiny_model_dir), liger=True)
    check_kernels(liger=False, device=torch.device("cpu"))  # nothing asked, nothing checked


def test_liger_on_cpu_is_refused_even_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel.importlib.util, "find_spec", lambda name: object())
    with pytest.raises(ConfigError, match="liger: true needs a CUDA GPU"):
        check_kernels(liger=True, device=torch.device("cpu"))
    assert "pip install" in LIGER_HINT


# --- config keys and identity -----------------------------------------------------------------


@pytest.mark.parametrize(("raw", "message"), [
    ({"compile": "yes"}, "compile: expected true/false"),
    ({"liger": 1}, "liger: expected true/false"),
    ({"gradient_checkpointing": "no"}, "gradient_checkpointing: expected true/false"),
    ({"ligr": True}, "did you mean `liger`"),
])
def test_new_keys_are_validated_at_load(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(raw)
    assert build_config({"compile": True, "liger": True}).numerics.compile is True


def test_compile_and_liger_enter_the_identity_only_when_set(data_file: str) -> None:
    config = TrainConfig.of(model="m", data=[DataSource(data_file)])
    identity = run_identity(config)
    assert "compile" not in identity and "liger" not in identity  # hashes of earlier runs unchanged
    for key in ("compile", "liger", "gradient_checkpointing"):
        changed = run_identity(config.updated(**{key: True}))
        assert changed[key] is True and config_hash(changed) != config_hash(identity)


# --- gradient checkpointing: same loss, same gradients ------------------------------------------


@pytest.mark.parametrize("method", ["full", "lora"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_model_dir, method: str) -> None:
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = load_model(str(tiny_model_dir), method=method, lora_dropout=0.0,
                           gradient_checkpointing=checkpointing)
        if method == "lora":  # B starts at zero; perturb it so A gets a gradient too
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if "lora_B" in name:
                        p.normal_(0, 0.02, generator=torch.Generator().manual_seed(1))
        samples = _samples(6, model.config.vocab_size)
        batches = plan_micro_batches(samples, max_tokens=96, row_tokens=48)
        loss = accumulate_gradients(model, batches, sum(s.num_loss_tokens for s in samples), "cpu")
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
        results.append((loss, grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert grads_a.abs().sum() > 0
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    torch.testing.assert_close(grads_a, grads_b, rtol=1e-5, atol=1e-7)


# --- torch.compile: regional, in place ---------------------------------------------------------


def test_compile_model_compiles_each_layer_in_place(tiny_model_dir) -> None:
    model = load_model(str(tiny_model_dir))
    samples = _samples(4, model.config.vocab_size, seed=3)
    batches = plan_micro_batches(samples, max_tokens=256)
    n_loss = sum(s.num_loss_tokens for s in samples)
    before = accumulate_gradients(model, batches, n_loss, "cpu")
    keys = list(model.state_dict())
    model.zero_grad(set_to_none=True)
    assert compile_model(model, backend="eager") == model.config.num_hidden_layers
    assert list(model.state_dict()) == keys  # names unchanged: checkpoints and save_pretrained as before
    assert accumulate_gradients(model, batches, n_loss, "cpu") == pytest.approx(before, rel=1e-6)


def test_train_with_compile(tiny_model_dir, data_file, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel, "COMPILE_BACKEND", "eager")  # the loop's wiring, without inductor's compile time
    result = train(_config(tiny_model_dir, data_file, tmp_path / "run", compile=True))
    assert result.status == "completed"
    records = read_telemetry(tmp_path / "run" / "telemetry.jsonl")
    assert len(records) == 2 and all(r["mfu"] is None for r in records)  # CPU: no peak, no MFU


# --- varlen kernels ---------------------------------------------------------------------------


def test_varlen_kernels_are_flash_attention_only() -> None:
    assert uses_varlen_kernel("flash_attention_2") and uses_varlen_kernel("flash_attention_3")
    assert not uses_varlen_kernel("sdpa") and not uses_varlen_kernel("eager")


def test_boundaries_pass_through_a_non_flash_forward_unchanged(tiny_model_dir) -> None:
    """The four kwargs flow through transformers' forward (and are ignored by SDPA): same losses."""
    model = load_model(str(tiny_model_dir)).eval()
    samples = _samples(5, model.config.vocab_size, seed=4)
    plain = per_sample_losses(model, collate_packed(samples))
    explicit = per_sample_losses(model, collate_packed(samples, boundaries=True))
    assert plain == explicit


# --- packing refused where masks ignore position ids (a tiny Bloom) ----------------------------


def test_bloom_is_refused_llama_is_not(tiny_bloom_dir, tiny_model_dir) -> None:
    reason = packing_refusal(load_model(str(tiny_bloom_dir), attn_implementation="eager"))  # no SDPA for Bloom
    assert reason is not None and "bloom" in reason
    assert packing_refusal(load_model(str(tiny_model_dir))) is None
    assert packing_refusal(load_model(str(tiny_model_dir), method="lora")) is None


def test_bloom_one_sample_per_row_matches_alone_packing_would_not(tiny_bloom_dir) -> None:
    model = load_model(str(tiny_bloom_dir), attn_implementation="eager").eval()
    samples = _samples(6, model.config.vocab_size, seed=5)
    alone = [per_sample_losses(model, collate_packed([s]))[0] for s in samples]
    unpacked = plan_micro_batches(samples, max_tokens=256, pack=False)
    assert any(mb.input_ids.shape[0] > 1 for mb in unpacked)  # rows padded to the longest
    fallback = sorted(loss for mb in unpacked for loss in per_sample_losses(model, mb))
    torch.testing.assert_close(torch.tensor(fallback), torch.tensor(sorted(alone)), rtol=1e-5, atol=1e-5)
    # What the refusal prevents: packed into one row, Bloom's later samples see the earlier ones.
    leaked = per_sample_losses(model, collate_packed(samples))
    assert max(abs(a - b) for a, b in zip(leaked, alone)) > 1e-4  # 20x the tolerance above


def test_train_on_bloom_falls_back_to_one_sample_per_row(tiny_bloom_dir, data_file, tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="tunescout.train"):
        result = train(_config(tiny_bloom_dir, data_file, tmp_path / "run", attn_implementation="eager"))
    assert result.status == "completed"
    assert any("packing off" in r.message and "bloom" in r.message for r in caplog.records)
    records = read_telemetry(tmp_path / "run" / "telemetry.jsonl")
    assert all(r["micro_batches"] >= 1 for r in records)
