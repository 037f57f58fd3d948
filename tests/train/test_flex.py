"""Flex attention for packed rows: the same per-sample losses as each sample alone (the block
mask transformers builds from tunescout's restarting position ids), the same gradient as SDPA
where torch can train it, a clear refusal where it cannot, and ``auto`` choosing it only there."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from samples import random_samples

from tunescout.config import ConfigError, DataSource, TrainConfig, build_config
from tunescout.data.packing import collate_packed
from tunescout.train import train
from tunescout.train.accel import flex_refusal
from tunescout.train.loss import accumulate_gradients, per_sample_losses
from tunescout.train.models import load_model, resolve_attn_implementation

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def uncompiled_flex(monkeypatch: pytest.MonkeyPatch) -> None:
    """Transformers' flex path with torch's reference (uncompiled) flex attention and block mask.

    On a CPU, transformers compiles both with inductor, which needs a C++ compiler and, in torch
    2.13, fails to compile its CPU attention template for some shapes. The reference path computes
    the same masked attention from the same block mask, which is what these tests are about.
    """
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    from transformers import masking_utils
    from transformers.integrations import flex_attention as hf_flex

    monkeypatch.setattr(hf_flex, "compile_friendly_flex_attention",
                        lambda q, k, v, training=False, **kw: flex_attention(q, k, v, **kw))
    monkeypatch.setattr(masking_utils, "create_block_mask",
                        lambda *a, **kw: create_block_mask(*a, **{**kw, "_compile": False}))


@pytest.mark.usefixtures("uncompiled_flex")
def test_flex_packed_losses_match_each_sample_alone(tiny_model_dir: Path) -> None:
    """Forward only, so it runs on a CPU too."""
    model = load_model(str(tiny_model_dir), attn_implementation="flex_attention")
    model.eval()
    samples = random_samples(4, model.config.vocab_size, 5, 150, min_len=20)
    with torch.no_grad():
        packed = per_sample_losses(model, collate_packed(samples))
        # two rows of unequal width: the shorter row's padding is a sequence of its own
        padded = per_sample_losses(model, collate_packed([samples[:3], samples[3:]]))
        alone = [per_sample_losses(model, collate_packed([s]))[0] for s in samples]
        # the same row with positions that never restart: one sequence, the last sample sees the rest
        joined = collate_packed(samples)
        logits = model(input_ids=joined.input_ids, use_cache=False,
                       position_ids=torch.arange(joined.input_ids.shape[1]).unsqueeze(0)).logits[0]
        last = slice(joined.input_ids.shape[1] - len(samples[-1]), None)
        targets = joined.targets[0, last]
        leaky = float(torch.nn.functional.cross_entropy(logits[last][targets != -100], targets[targets != -100]))
    assert max(alone) - min(alone) > 1e-3  # samples differ, so attending across them would move a loss
    torch.testing.assert_close(torch.tensor(packed), torch.tensor(alone), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.tensor(padded), torch.tensor(alone), rtol=1e-4, atol=1e-4)
    assert abs(leaky - alone[-1]) > 1e-3  # what this test would catch


@pytest.mark.skipif(flex_refusal(DEVICE) is not None, reason=str(flex_refusal(DEVICE)))
def test_flex_gradient_of_packed_rows_equals_sdpa(tiny_model_dir: Path) -> None:
    from transformers import AutoConfig

    samples = random_samples(6, AutoConfig.from_pretrained(tiny_model_dir).vocab_size, 2, 120, min_len=10)
    batches = [collate_packed(samples[:4]), collate_packed([samples[4:], samples[:1]])]
    n_loss = sum(mb.num_loss_tokens for mb in batches)
    grads = {}
    for attn in ("sdpa", "flex_attention"):
        torch.manual_seed(0)
        model = load_model(str(tiny_model_dir), attn_implementation=attn, device=torch.device(DEVICE))
        accumulate_gradients(model, batches, n_loss, DEVICE)
        grads[attn] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).float()
    error = float((grads["flex_attention"] - grads["sdpa"]).norm() / grads["sdpa"].norm())
    assert error < 1e-4


@pytest.mark.skipif(flex_refusal("cpu") is None, reason="this torch trains flex attention on a CPU")
def test_flex_training_on_a_cpu_is_refused_before_any_data_is_read(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = TrainConfig.of(model=str(tiny_model_dir), data=[DataSource(str(tmp_path / "missing.jsonl"))],
                         attn_implementation="flex_attention", device="cpu", output_dir=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match=r"attn_implementation: flex_attention: torch .* cannot train flex "
                                          r"attention on cpu.*use sdpa"):
        train(config)  # the data file does not exist: a ConfigError about flex proves the check came first


def test_unknown_attention_implementations_are_refused_at_load() -> None:
    with pytest.raises(ConfigError, match=r"attn_implementation: must be one of .*flex_attention.*'flex' "
                                          r"\(did you mean `flex_attention`\?\)"):
        build_config({"model": "m", "data": [{"path": "d.jsonl"}], "attn_implementation": "flex"})
    hub_kernel = build_config({"model": "m", "data": [{"path": "d.jsonl"}],
                               "attn_implementation": "kernels-community/flash-attn"})
    assert hub_kernel.numerics.attn_implementation == "kernels-community/flash-attn"  # passed to transformers as written


def test_auto_picks_flex_only_where_it_trains_and_the_model_has_it(tiny_model_dir: Path, tiny_bloom_dir: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from tunescout.train import models

    real_find_spec = models.importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec",
                        lambda name, *a: None if name == "flash_attn" else real_find_spec(name, *a))
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(models, "flex_refusal", lambda device_type: None)  # as on a GPU
    assert resolve_attn_implementation("auto", cuda, torch.bfloat16, str(tiny_model_dir)) == "flex_attention"
    assert resolve_attn_implementation("auto", cuda, torch.float32, str(tiny_model_dir)) == "flex_attention"
    assert resolve_attn_implementation("auto", cuda, torch.bfloat16, str(tiny_bloom_dir)) == "sdpa"  # no flex there
    assert resolve_attn_implementation("auto", cpu, torch.float32, str(tiny_model_dir)) == "sdpa"
    assert resolve_attn_implementation("sdpa", cuda, torch.bfloat16, str(tiny_model_dir)) == "sdpa"
    monkeypatch.setattr(models, "flex_refusal", lambda device_type: "no backward")
    assert resolve_attn_implementation("auto", cuda, torch.bfloat16, str(tiny_model_dir)) == "sdpa"
