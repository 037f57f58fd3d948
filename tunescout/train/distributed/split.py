"""The two pieces of a sharded run that are not collectives: how a batch is dealt, how a model is wrapped.

See :mod:`tunescout.train.distributed.ranks` for why the deal is by samples and why every rank
makes the same number of passes.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from tunescout.data.packing import MicroBatch

__all__ = ["Share", "deal_samples", "shard_model"]

log = logging.getLogger("tunescout.train.distributed")


def deal_samples(lengths: Sequence[int], ranks: int) -> list[list[int]]:
    """Deal items to ``ranks`` by length: longest first, each to the rank with the fewest tokens.

    Deterministic (ties go to the lower rank), so every rank computes the same deal.

    Returns:
        For each rank, the indices of its items in increasing order.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    loads = [(0, r) for r in range(ranks)]  # (tokens so far, rank): a heap
    shares: list[list[int]] = [[] for _ in range(ranks)]
    for i in order:
        tokens, r = heapq.heappop(loads)
        shares[r].append(i)
        heapq.heappush(loads, (tokens + lengths[i], r))
    return [sorted(s) for s in shares]


@dataclass
class Share:
    """This rank's part of an effective batch (or of the validation set), packed."""

    micro_batches: list[MicroBatch]
    passes: int
    """Forward (and backward) passes every rank makes: the longest share's micro-batch count."""
    filler: MicroBatch | None
    """What the passes past this rank's own micro-batches run on (with zero weight)."""
    loss_tokens: int
    """Loss tokens of the whole batch, all ranks together: the one divisor of the loss."""
    total_micro_batches: int
    """Micro-batches of all ranks (fillers excluded), for telemetry."""
    pad_tokens: int
    """Padding in the micro-batches of all ranks, for telemetry."""

    def __bool__(self) -> bool:
        return self.passes > 0

    def passes_with_weights(self) -> list[tuple[MicroBatch, bool]]:
        """``(micro-batch, counts)`` for each pass; fillers do not count."""
        own = [(mb, True) for mb in self.micro_batches]
        return own + [(self.filler, False)] * (self.passes - len(own))  # type: ignore[list-item]


def shard_model(model: torch.nn.Module, mesh: Any) -> torch.nn.Module:
    """Apply FSDP2 (``fully_shard``) to every transformer block, then to the whole model.

    Blocks are the module classes the model lists in ``_no_split_modules`` (each Hugging Face
    architecture names its decoder layer there), so one block's weights are gathered at a time.
    Gradient reduction is set to a plain sum with no division: the loss is already divided by
    the global loss-token count (module docstring). Frozen parameters (a LoRA base) are sharded
    too and get no gradient.
    """
    from torch.distributed.fsdp import FSDPModule, fully_shard

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        log.warning("%s names no transformer blocks (_no_split_modules): sharding it as one unit, which gathers "
                    "all its weights at once", type(base).__name__)
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            # A sum with no pre/post scaling: gloo has no PREMUL_SUM, and NCCL needs no extra kernel.
            module.set_force_sum_reduction_for_comms(True)
    return model
