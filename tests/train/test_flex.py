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
from tunescout.train import accel, train
from tunescout.train.accel import flex_refusal
from tunescout.train.loss import accumulate_gradients, per_sample_losses
from tunescout.train.models import load_model, resolve_attn_implementation

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def test_flex_packed_losses_match_each_sample_alone(tiny_model_dir: Path) -> None:
    """Forward only, so it runs on a CPU too (torch compiles flex attention there for inference)."""
    model = load_model(str(tiny_model_dir), attn_implementation="flex_attention")
    model.eval()
    samples = random_samples(3, model.config.vocab_size, 5, 150, min_len=20)
    with torch.no_grad():
        packed = per_sample_losses(model, collate_packed(samples))
        alone = [per_sample_losses(model, collate_packed([s]))[0] for s in samples]
    assert max(alone) - min(alone) > 1e-3  # a mask letting samples see each other would show
    torch.testing.assert_close(torch.tensor(packed), torch.tensor(alone), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(flex_refusal(DEVICE) is not None, reason=str(flex_refusal(DEVICE)))
def test_flex_gradient_of_packed_rows_equals_sdpa(tiny_model_dir: Path) -> None:
    samples = random_samples(6, 512, 2, 120, min_len=10)
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
    config = TrainConfig(model=str(tiny_model_dir), data=[DataSource(str(tmp_path / "missing.jsonl"))],
                         attn_implementation="flex_attention", device="cpu", output_dir=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match=r"attn_implementation: flex_attention: torch .* cannot train flex "
                                          r"attention on cpu.*use sdpa"):
        train(config)  # the data file does not exist: a ConfigError about flex proves the check came first


def test_unknown_attention_implementations_are_refused_at_load() -> None:
    with pytest.raises(ConfigError, match=r"attn_implementation: must be one of .*flex_attention.*'flex'"):
        build_config({"model": "m", "data": [{"path": "d.jsonl"}], "attn_implementation": "flex"})


def test_auto_picks_flex_only_where_it_trains_and_the_model_has_it(tiny_model_dir: Path, tiny_bloom_dir: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from tunescout.train import models

    real_find_spec = models.importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec",
                        lambda name, *a: None if name == "flash_attn" else real_find_spec(name, *a))
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(accel, "flex_refusal", lambda device_type: None)  # as on a GPU
    assert resolve_attn_implementation("auto", cuda, torch.bfloat16, str(tiny_model_dir)) == "flex_attention"
    assert resolve_attn_implementation("auto", cuda, torch.bfloat16, str(tiny_bloom_dir)) == "sdpa"  # no flex there
    assert resolve_attn_implementation("auto", cpu, torch.float32, str(tiny_model_dir)) == "sdpa"
    assert resolve_attn_implementation("sdpa", cuda, torch.bfloat16, str(tiny_model_dir)) == "sdpa"
    monkeypatch.setattr(accel, "flex_refusal", lambda device_type: "no backward")
    assert resolve_attn_implementation("auto", cuda, torch.bfloat16, str(tiny_model_dir)) == "sdpa"
