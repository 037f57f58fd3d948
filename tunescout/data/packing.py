"""Padding-free micro-batches under a token budget.

An optimizer step sees ``batch_size`` samples (the effective batch). They are bin-packed into
micro-batches of at most ``max_tokens`` tokens each, every micro-batch one row of concatenated
samples whose position ids restart at 0 for each sample. Transformers reads the restarts and
keeps attention inside each sample (block-diagonal causal mask for SDPA/eager, varlen kernels
for flash attention), so a packed sample sees exactly what it would see alone, and no compute
is spent on padding.

Targets are shifted *per sample* before concatenation: the last token of a sample predicts
nothing, never the first token of its neighbour.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Sequence

import torch

from tunescout.data.tokenize import IGNORE, TokenizedSample

__all__ = ["MicroBatch", "pack_bins", "collate_packed", "plan_micro_batches"]


def pack_bins(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Best-fit-decreasing bin packing of item ``lengths`` into bins of ``capacity``.

    Items go longest first into the fullest bin that still has room (a sorted list of free
    space makes each placement O(log bins)); this packs as tightly as first-fit-decreasing and
    stays fast for effective batches of thousands of samples.

    Returns:
        Bins as lists of item indices, in a deterministic order.

    Raises:
        ValueError: an item is longer than ``capacity``.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free tokens, bin index), kept sorted
    for i in order:
        size = lengths[i]
        if size > capacity:
            raise ValueError(f"item of {size} tokens exceeds the micro-batch budget of {capacity}")
        pos = bisect.bisect_left(free, (size, -1))
        if pos < len(free):
            room, b = free.pop(pos)
            bins[b].append(i)
            bisect.insort(free, (room - size, b))
        else:
            bins.append([i])
            bisect.insort(free, (capacity - size, len(bins) - 1))
    return bins


@dataclass
class MicroBatch:
    """One packed row: ``[1, T]`` tensors ready for a causal LM forward pass."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    targets: torch.Tensor
    """Next-token targets, already shifted per sample; ``-100`` where no loss is taken."""
    num_samples: int

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def num_loss_tokens(self) -> int:
        return int((self.targets != IGNORE).sum())

    def to(self, device: torch.device | str) -> "MicroBatch":
        return MicroBatch(
            self.input_ids.to(device, non_blocking=True),
            self.position_ids.to(device, non_blocking=True),
            self.targets.to(device, non_blocking=True),
            self.num_samples,
        )


def collate_packed(samples: Sequence[TokenizedSample]) -> MicroBatch:
    """Concatenate samples into one padding-free row with per-sample positions and targets."""
    ids: list[int] = []
    pos: list[int] = []
    tgt: list[int] = []
    for s in samples:
        n = len(s.input_ids)
        ids.extend(s.input_ids)
        pos.extend(range(n))
        tgt.extend(s.labels[1:])
        tgt.append(IGNORE)
    as_row = lambda xs: torch.tensor(xs, dtype=torch.long).unsqueeze(0)  # noqa: E731
    return MicroBatch(as_row(ids), as_row(pos), as_row(tgt), len(samples))


def plan_micro_batches(samples: Sequence[TokenizedSample], max_tokens: int) -> list[MicroBatch]:
    """Split one effective batch into packed micro-batches of at most ``max_tokens`` tokens."""
    bins = pack_bins([len(s) for s in samples], max_tokens)
    return [collate_packed([samples[i] for i in b]) for b in bins]
