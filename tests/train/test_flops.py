"""Model FLOPs, device peaks and MFU (tunescout.train.flops), on CPU."""

from __future__ import annotations

import json

import pytest
import torch

from tunescout.train.flops import (
    MfuMeter,
    ModelShape,
    dense_flops_per_token,
    peak_bf16_flops,
    peak_bf16_tflops_for,
    training_flops,
)
from tunescout.train.telemetry import StepRecord


def _llama(tied: bool = True) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied)
    return LlamaForCausalLM(config)


def test_shape_of_a_known_llama() -> None:
    # per layer: q 64x64 + k 64x32 + v 64x32 + o 64x64 = 12,288; MLP 3 x 64 x 128 = 24,576; 2 norms 128
    per_layer = 12_288 + 24_576 + 128
    shape = ModelShape.of(_llama(tied=True))
    assert shape == ModelShape(body=2 * per_layer + 64, body_trainable=2 * per_layer + 64, head=512 * 64,
                               head_trainable=512 * 64, layers=2, width=64)
    untied = ModelShape.of(_llama(tied=False))  # the input embedding is a lookup either way
    assert untied.body == shape.body and untied.head == shape.head


def test_training_flops_is_the_standard_formula_for_one_sample() -> None:
    shape = ModelShape.of(_llama())
    n = shape.body + shape.head
    s = 10
    expected = s * (6 * n + 12 * shape.layers * shape.width * s)
    assert training_flops(shape, [s], loss_tokens=s) == pytest.approx(expected)
    assert training_flops(shape, [s], loss_tokens=s) == pytest.approx(s * dense_flops_per_token(n, 2, 64, s))


def test_attention_is_per_sample_and_the_head_per_loss_token() -> None:
    shape = ModelShape(body=1000, body_trainable=1000, head=100, head_trainable=100, layers=2, width=8)
    packed = training_flops(shape, [3, 5], loss_tokens=4)
    assert packed == pytest.approx(6 * 1000 * 8 + 6 * 100 * 4 + 12 * 2 * 8 * (9 + 25))
    # one row of the same 8 tokens would be charged 64 in the attention term, not 34
    assert packed < training_flops(shape, [8], loss_tokens=4)


def test_lora_costs_four_n_plus_six_per_adapter_parameter() -> None:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_llama(), LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    shape = ModelShape.of(model)
    adapters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert shape.body_trainable == adapters and shape.head_trainable == 0  # all-linear skips the output head
    full = ModelShape.of(_llama())
    assert shape.body == full.body + adapters and shape.head == full.head
    tokens = 7
    assert training_flops(shape, [tokens], tokens) == pytest.approx(
        (4 * shape.body + 2 * adapters + 4 * shape.head) * tokens + 12 * 2 * 64 * tokens ** 2)


@pytest.mark.parametrize(("name", "tflops"), [
    ("NVIDIA H100 80GB HBM3", 989.0),
    ("NVIDIA H100 PCIe", 756.0),
    ("NVIDIA H200", 989.0),
    ("NVIDIA A100-SXM4-80GB", 312.0),
    ("NVIDIA A100-PCIE-40GB", 312.0),
    ("NVIDIA L4", 121.0),
    ("NVIDIA L40S", 362.0),
    ("NVIDIA A10G", 125.0),
    ("NVIDIA A10", 125.0),
    ("NVIDIA GeForce RTX 4090", 165.0),
    ("Tesla V100-SXM2-16GB", None),  # no bf16 tensor cores
    ("Some Future Accelerator", None),
])
def test_peak_by_device_name(name: str, tflops: float | None) -> None:
    assert peak_bf16_tflops_for(name) == tflops


def test_no_peak_and_no_mfu_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert peak_bf16_flops("cpu") is None
    meter = MfuMeter.for_model(_llama(), torch.device("cpu"))
    assert meter([list(range(10))], 10, seconds=0.5) is None


def test_mfu_against_a_known_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert peak_bf16_flops("cuda") == 989e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Mystery GPU")
    assert peak_bf16_flops("cuda") is None
    shape = ModelShape(body=10**9, body_trainable=10**9, head=0, head_trainable=0, layers=0, width=0)
    meter = MfuMeter(shape, peak_flops=1e15)
    samples = [[0] * 1000] * 10  # 10,000 tokens x 6e9 FLOPs = 6e13 FLOPs
    assert meter(samples, 0, seconds=0.15) == pytest.approx(0.4)


def test_old_telemetry_without_mfu_still_reads() -> None:
    old = {"step": 1, "samples": 8, "tokens": 100, "loss": 2.0, "grad_norm": 1.0, "lr": 1e-3, "tokens_per_s": 10.0,
           "wall_s": 1.0, "loss_tokens": 50, "micro_batches": 1, "pad_tokens": 0, "phase": 0, "epoch": 0.1,
           "val_loss": None, "metrics": None}
    record = StepRecord(**old)
    assert record.mfu is None and json.loads(record.to_json())["mfu"] is None
