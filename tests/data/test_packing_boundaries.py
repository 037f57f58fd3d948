"""Explicit sequence boundaries for flash attention, and the one-sample-per-row plan (CPU only).

The boundaries must be exactly what transformers' own padding-free collator hands its flash
attention varlen path, so they are checked against ``DataCollatorWithFlattening`` and against
``prepare_fa_kwargs_from_position_ids`` (what transformers would infer from the position ids).
"""

from __future__ import annotations

import random

import pytest
import torch

from tunescout.data.packing import collate_packed, plan_micro_batches
from tunescout.data.tokenize import IGNORE, TokenizedSample

KWARGS = {"cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k"}


def _samples(lengths: list[int], seed: int = 0) -> list[TokenizedSample]:
    rng = random.Random(seed)
    out = []
    for n in lengths:
        ids = [rng.randrange(3, 100) for _ in range(n)]
        out.append(TokenizedSample(tuple(ids), tuple([IGNORE] + ids[1:])))
    return out


def test_one_row_boundaries_match_transformers_flattening_collator() -> None:
    from transformers import DataCollatorWithFlattening

    samples = _samples([5, 9, 3, 12])
    mb = collate_packed(samples, boundaries=True)
    kwargs = mb.attention_kwargs()
    assert set(kwargs) == KWARGS
    reference = DataCollatorWithFlattening(return_flash_attn_kwargs=True)(
        [{"input_ids": list(s.input_ids)} for s in samples], return_tensors="pt")
    for key in KWARGS:
        ours, theirs = kwargs[key], reference[key]
        if isinstance(theirs, torch.Tensor):
            assert ours.dtype == theirs.dtype == torch.int32
            assert torch.equal(ours, theirs), key
        else:
            assert ours == theirs and type(ours) is int, key  # a Python int: no GPU sync to read it
    assert torch.equal(mb.position_ids, reference["position_ids"])
    assert mb.cu_seq_lens.tolist() == [0, 5, 14, 17, 29] and mb.max_seq_len == 12


def test_padded_rows_boundaries_cover_the_flattened_micro_batch() -> None:
    """Several rows padded to the longest: a row's padding is a sequence of its own, and the
    offsets agree with what transformers infers from the position ids of the flattened batch."""
    from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

    samples = _samples([30, 8, 7, 20, 25, 4], seed=1)
    (mb,) = plan_micro_batches(samples, max_tokens=256, row_tokens=40, boundaries=True)
    rows, width = mb.input_ids.shape
    assert rows > 1 and rows * width > mb.num_tokens  # padding present
    assert mb.cu_seq_lens[0] == 0 and mb.cu_seq_lens[-1] == rows * width
    (cu_q, cu_k), (max_q, _) = prepare_fa_kwargs_from_position_ids(mb.position_ids)
    assert torch.equal(mb.cu_seq_lens, cu_q) and torch.equal(cu_q, cu_k)
    assert mb.max_seq_len == int(max_q)
    moved = mb.to("cpu")
    assert torch.equal(moved.cu_seq_lens, mb.cu_seq_lens) and moved.max_seq_len == mb.max_seq_len


def test_no_boundaries_by_default() -> None:
    for mb in plan_micro_batches(_samples([5, 9, 3]), max_tokens=64):
        assert mb.cu_seq_lens is None and mb.attention_kwargs() == {}


def test_unpacked_plan_puts_each_sample_in_its_own_row() -> None:
    samples = _samples([30, 8, 7, 20, 25, 4], seed=2)
    batches = plan_micro_batches(samples, max_tokens=64, pack=False, boundaries=True)
    assert sum(mb.input_ids.shape[0] for mb in batches) == len(samples) == sum(mb.num_samples for mb in batches)
    assert sum(mb.num_tokens for mb in batches) == sum(len(s) for s in samples)
    for mb in batches:
        assert mb.input_ids.numel() <= 64
        for r in range(mb.input_ids.shape[0]):
            # one sample per row: positions restart only where padding begins
            restarts = (mb.position_ids[r] == 0).nonzero().flatten().tolist()
            assert restarts[0] == 0 and len(restarts) <= 2
    with pytest.raises(ValueError, match="exceeds the micro-batch budget"):
        plan_micro_batches(samples, max_tokens=16, pack=False)
