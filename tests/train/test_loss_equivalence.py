"""The two numerical proofs the design rests on (tiny Llama, float32, CPU):

(a) a sample packed with others gets the same loss as the sample alone;
(b) the gradient of one optimizer step does not depend on how the effective batch is split.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from samples import random_samples

from tunescout.data.packing import collate_packed, plan_micro_batches
from tunescout.data.tokenize import TokenizedSample
from tunescout.train.loss import accumulate_gradients, per_sample_losses
from tunescout.train.models import load_model


def _samples(n: int, vocab: int, seed: int = 0, max_len: int = 60) -> list[TokenizedSample]:
    return random_samples(n, vocab, seed, max_len, min_len=3)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_losses_match_unpacked(tiny_model_dir: Path, attn: str) -> None:
    torch.manual_seed(0)
    model = load_model(str(tiny_model_dir), attn_implementation=attn)
    model.eval()
    samples = _samples(7, model.config.vocab_size)
    packed = per_sample_losses(model, collate_packed(samples))
    alone = [per_sample_losses(model, collate_packed([s]))[0] for s in samples]
    assert len(packed) == len(samples)
    # Losses differ between samples, so a broken mask (attending across samples) would show.
    assert max(alone) - min(alone) > 1e-3
    torch.testing.assert_close(torch.tensor(packed), torch.tensor(alone), rtol=1e-5, atol=1e-5)


def test_multi_row_packing_with_padding_matches_unpacked(tiny_model_dir: Path) -> None:
    """Rows of at most 80 tokens, several per micro-batch, padded to the longest row."""
    model = load_model(str(tiny_model_dir))
    model.eval()
    samples = _samples(9, model.config.vocab_size, seed=3)
    (mb,) = plan_micro_batches(samples, max_tokens=1024, row_tokens=80)
    assert mb.input_ids.shape[0] > 1 and (mb.input_ids.shape[1] * mb.input_ids.shape[0]) > mb.num_tokens
    packed = sorted(per_sample_losses(model, mb))
    alone = sorted(per_sample_losses(model, collate_packed([s]))[0] for s in samples)
    torch.testing.assert_close(torch.tensor(packed), torch.tensor(alone), rtol=1e-5, atol=1e-5)


def test_packing_across_samples_would_be_detected(tiny_model_dir: Path) -> None:
    """Sanity check of the test above: without restarting positions the losses do change."""
    model = load_model(str(tiny_model_dir))
    model.eval()
    samples = _samples(4, model.config.vocab_size, seed=1)
    mb = collate_packed(samples)
    alone = [per_sample_losses(model, collate_packed([s]))[0] for s in samples]
    mb.position_ids = torch.arange(mb.num_tokens).unsqueeze(0)  # one long sequence
    leaked = per_sample_losses(model, mb)
    assert abs(leaked[-1] - alone[-1]) > 1e-4


def _grads(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])


@pytest.mark.parametrize("method", ["full", "lora"])
def test_gradient_does_not_depend_on_micro_batching(tiny_model_dir: Path, method: str) -> None:
    torch.manual_seed(0)
    model = load_model(str(tiny_model_dir), method=method, lora_dropout=0.0)
    if method == "lora":  # B starts at zero; perturb so every LoRA weight gets a gradient
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.02)
    samples = _samples(24, model.config.vocab_size, seed=2)
    n_loss = sum(s.num_loss_tokens for s in samples)

    one = plan_micro_batches(samples, max_tokens=10_000)
    many = plan_micro_batches(samples, max_tokens=64)
    rows = plan_micro_batches(samples, max_tokens=256, row_tokens=64)  # several padded rows each
    assert len(one) == 1 and len(many) > 8 and max(mb.input_ids.shape[0] for mb in rows) > 1

    loss_one = accumulate_gradients(model, one, n_loss, "cpu")
    g_one = _grads(model).clone()
    model.zero_grad(set_to_none=True)
    loss_many = accumulate_gradients(model, many, n_loss, "cpu")
    g_many = _grads(model).clone()

    model.zero_grad(set_to_none=True)
    loss_rows = accumulate_gradients(model, rows, n_loss, "cpu")
    g_rows = _grads(model)

    assert loss_one == pytest.approx(loss_many, rel=1e-6) and loss_one == pytest.approx(loss_rows, rel=1e-6)
    assert float(g_one.norm()) > 0
    for g in (g_many, g_rows):
        rel = float((g_one - g).norm() / g_one.norm())
        assert rel < 1e-5, rel


def test_mean_of_micro_batch_means_would_differ(tiny_model_dir: Path) -> None:
    """The naive alternative (average per micro-batch) gives another gradient: the test above
    would catch it."""
    model = load_model(str(tiny_model_dir))
    samples = _samples(24, model.config.vocab_size, seed=2)
    n_loss = sum(s.num_loss_tokens for s in samples)
    many = plan_micro_batches(samples, max_tokens=64)
    accumulate_gradients(model, many, n_loss, "cpu")
    g_right = _grads(model).clone()
    model.zero_grad(set_to_none=True)
    for mb in many:
        accumulate_gradients(model, [mb], mb.num_loss_tokens * len(many), "cpu")
    g_naive = _grads(model)
    assert float((g_right - g_naive).norm() / g_right.norm()) > 1e-3


@pytest.mark.parametrize("method", ["full", "lora"])
def test_every_candidate_plan_gives_per_sample_losses_and_the_same_gradient(tiny_model_dir: Path,
                                                                             method: str) -> None:
    """Both proofs for each plan shape the cost model may choose (packing.PLAN_SHAPES)."""
    from tunescout.data.packing import PLAN_SHAPES, candidate_plans, collate_plan

    torch.manual_seed(0)
    model = load_model(str(tiny_model_dir), method=method, lora_dropout=0.0)
    samples = _samples(20, model.config.vocab_size, seed=4)
    lengths = [len(s) for s in samples]
    plans = candidate_plans(lengths, max_tokens=240, max_length=120)
    assert set(plans) == set(PLAN_SHAPES)  # all four differ on this batch
    n_loss = sum(s.num_loss_tokens for s in samples)
    model.eval()
    alone = sorted(per_sample_losses(model, collate_packed([s]))[0] for s in samples)
    grads = {}
    for name, plan in plans.items():
        batches = collate_plan(samples, plan)
        assert sorted(i for mb in plan for row in mb for i in row) == list(range(len(samples)))
        assert all(mb.input_ids.numel() <= 240 for mb in batches)  # the budget holds, padding included
        packed = sorted(loss for mb in batches for loss in per_sample_losses(model, mb))
        torch.testing.assert_close(torch.tensor(packed), torch.tensor(alone), rtol=1e-5, atol=1e-5)
        model.train()
        accumulate_gradients(model, batches, n_loss, "cpu")
        grads[name] = _grads(model).clone()
        model.zero_grad(set_to_none=True)
        model.eval()
    reference = grads["one-row"]
    for name, g in grads.items():
        assert float((g - reference).norm() / reference.norm()) < 1e-5, name
