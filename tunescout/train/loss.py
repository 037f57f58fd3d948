"""The training loss of an effective batch, independent of how it is split into micro-batches.

Every micro-batch contributes the *sum* of its token losses divided by the loss-token count of
the whole effective batch; the gradients accumulate to exactly the gradient of the mean token
loss over the effective batch. (Averaging per micro-batch and then over micro-batches, as many
trainers do, weights tokens in short micro-batches more and changes the gradient with the
packing.)
"""

from __future__ import annotations

import functools
import inspect
from typing import Sequence

import torch
import torch.nn.functional as F

from tunescout.data.packing import MicroBatch
from tunescout.data.tokenize import IGNORE

__all__ = ["accumulate_gradients", "evaluate_loss", "micro_batch_loss_sum", "per_sample_losses"]


@functools.cache
def _forward_takes_logits_to_keep(model_type: type) -> bool:
    return "logits_to_keep" in inspect.signature(model_type.forward).parameters


def _supports_logits_to_keep(model: torch.nn.Module) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _forward_takes_logits_to_keep(type(base))


def micro_batch_loss_sum(model: torch.nn.Module, mb: MicroBatch, autocast: torch.dtype | None = None) -> torch.Tensor:
    """Summed next-token cross-entropy over the loss tokens of one packed micro-batch.

    Logits are computed only at positions that carry loss (``logits_to_keep`` as a boolean mask),
    which saves the output projection and its memory on prompt tokens; the loss is taken in
    float32 whatever the model dtype. With ``autocast`` set, the forward pass computes in that
    dtype while the weights stay as they are (mixed precision).
    """
    mask = mb.targets != IGNORE
    kwargs = {"input_ids": mb.input_ids, "position_ids": mb.position_ids, "use_cache": False,
              **mb.attention_kwargs()}  # explicit sequence boundaries for flash attention, when planned
    device_type = mb.input_ids.device.type
    with torch.autocast(device_type, dtype=autocast or torch.float32, enabled=autocast is not None):
        if _supports_logits_to_keep(model):
            logits = model(**kwargs, logits_to_keep=mask).logits
        else:
            logits = model(**kwargs).logits[mask]
    return F.cross_entropy(logits.float(), mb.targets[mask], reduction="sum")


def accumulate_gradients(
    model: torch.nn.Module,
    micro_batches: Sequence[MicroBatch],
    total_loss_tokens: int,
    device: torch.device | str,
    autocast: torch.dtype | None = None,
) -> float:
    """Backward every micro-batch with the loss scaled by the effective batch's token count.

    Returns:
        The mean token loss of the effective batch (a float, for telemetry).
    """
    total = torch.zeros((), device=device, dtype=torch.float32)
    for mb in micro_batches:
        loss_sum = micro_batch_loss_sum(model, mb.to(device), autocast)
        (loss_sum / total_loss_tokens).backward()
        total += loss_sum.detach()
    return float(total) / total_loss_tokens


@torch.no_grad()
def evaluate_loss(
    model: torch.nn.Module,
    micro_batches: Sequence[MicroBatch],
    device: torch.device | str,
    autocast: torch.dtype | None = None,
) -> float:
    """Mean token loss over micro-batches (validation), with the model in eval mode."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for mb in micro_batches:
        total += float(micro_batch_loss_sum(model, mb.to(device), autocast))
        count += mb.num_loss_tokens
    model.train(was_training)
    return total / max(1, count)


@torch.no_grad()
def per_sample_losses(model: torch.nn.Module, mb: MicroBatch) -> list[float]:
    """Mean loss of each sample in a packed micro-batch, row by row (padding skipped).

    Used to check packing against unpacked runs.
    """
    logits = model(input_ids=mb.input_ids, position_ids=mb.position_ids, use_cache=False,
                   **mb.attention_kwargs()).logits
    out = []
    for r in range(mb.input_ids.shape[0]):
        token_loss = F.cross_entropy(logits[r].float(), mb.targets[r], reduction="none", ignore_index=IGNORE)
        starts = (mb.position_ids[r] == 0).nonzero().flatten().tolist() + [mb.input_ids.shape[1]]
        for a, b in zip(starts[:-1], starts[1:]):
            keep = mb.targets[r, a:b] != IGNORE
            if keep.any():  # padding forms a segment with no targets
                out.append(float(token_loss[a:b][keep].sum() / keep.sum()))
    return out
