"""Model FLOPs of a training step and MFU (model FLOPs utilisation) against the device's peak.

MFU = the FLOPs a step *needs* / its wall time / the device's dense bf16 peak. "Needs" is the
convention of PaLM (Chowdhery et al. 2022, appendix B) with two corrections that keep it honest
for packed fine-tuning, so that wasted work never raises the figure:

* **Per sample, not per row.** The attention term is ``12 · layers · width · s²`` for each sample
  of ``s`` tokens (QKᵀ and AV, forward and backward, causal masking not halved, as in PaLM), summed
  over the samples. A packed row of several samples is charged for its samples, not for the
  row's length squared: attention across sample boundaries is masked-out work, and padding is
  no work at all. With ``width = heads · head_dim`` (query heads; grouped KV heads do not change
  the score and value products).
* **Only the matmuls that run.** Per token, a weight matrix of ``n`` parameters costs ``2n`` in
  the forward pass, ``2n`` for the gradient of its input and ``2n`` for its own gradient, the last
  only when it is trained: ``4·N + 2·N_trainable`` per token. For full fine-tuning that is the
  familiar ``6·N``; for LoRA it is about ``4·N`` (the frozen base still runs forward and passes
  gradients back). Embedding lookups are not matmuls and are left out; the output projection
  (tied or not) runs only on the tokens that carry loss (tunescout computes logits only there,
  ``logits_to_keep``), so it is charged for those tokens only.

For a single sample of ``s`` tokens, all trained and all carrying loss, this is exactly the
standard ``(6·N + 12·layers·width·s) · s`` (:func:`dense_flops_per_token`). Recomputation under
gradient checkpointing is not counted (it is the hardware's work, not the model's), so
checkpointing lowers MFU by what it costs. Mixture-of-experts models are charged for every
expert, which overstates their MFU.

The peaks are vendors' dense (no sparsity) bf16 tensor-core figures, matched by the words of
``torch.cuda.get_device_name``; an unknown device or a CPU has no peak, and its MFU is ``None``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence, Sized

import torch

__all__ = ["ModelShape", "MfuMeter", "dense_flops_per_token", "peak_bf16_flops", "peak_bf16_tflops_for",
           "training_flops"]

PEAK_BF16_TFLOPS: tuple[tuple[tuple[str, ...], float], ...] = (
    # (words that must all appear in the device name, dense bf16 TFLOP/s); most specific first.
    (("gh200",), 989.0),
    (("h200", "nvl"), 835.0),
    (("h200",), 989.0),
    (("h100", "pcie"), 756.0),
    (("h100", "nvl"), 835.0),
    (("h100",), 989.0),  # SXM ("NVIDIA H100 80GB HBM3")
    (("h800",), 989.0),
    (("h20",), 148.0),
    (("b200",), 2250.0),
    (("b100",), 1750.0),
    (("a100",), 312.0),
    (("a800",), 312.0),
    (("l40s",), 362.0),
    (("l40",), 181.0),
    (("l4",), 121.0),
    (("a10g",), 125.0),
    (("a10",), 125.0),
    (("rtx", "6000", "ada"), 364.0),
    (("a6000",), 155.0),
    (("rtx", "4090"), 165.0),
    (("rtx", "3090"), 71.0),
)
"""Dense bf16 peaks from the vendors' datasheets (GeForce cards: with float32 accumulation)."""


def peak_bf16_tflops_for(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU by its name, or None when the table does not know it.

    Names are compared word by word (``NVIDIA A100-SXM4-80GB`` → ``nvidia a100 sxm4 80gb``), so
    an ``L4`` is never taken for an ``L40S`` nor an ``A10`` for an ``A100``.
    """
    words = set(re.split(r"[^a-z0-9]+", device_name.lower()))
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if all(w in words for w in pattern):
            return tflops
    return None


def peak_bf16_flops(device: torch.device | str) -> float | None:
    """The dense bf16 peak (FLOP/s) of ``device``; None on a CPU or an unknown GPU."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    tflops = peak_bf16_tflops_for(torch.cuda.get_device_name(device))
    return None if tflops is None else tflops * 1e12


def dense_flops_per_token(n_params: int, layers: int, width: int, seq_len: int) -> float:
    """The standard training FLOPs per token, ``6·N + 12·layers·width·seq_len`` (PaLM, appendix B)."""
    return 6.0 * n_params + 12.0 * layers * width * seq_len


@dataclass(frozen=True)
class ModelShape:
    """What the FLOPs of a causal LM depend on (see the module docstring)."""

    body: int
    """Matmul parameters applied to every token (embedding lookups and the output projection excluded)."""
    body_trainable: int
    head: int
    """Parameters of the output projection, applied to loss tokens only."""
    head_trainable: int
    layers: int
    width: int
    """Query heads × head dimension: the width of the attention products."""

    @classmethod
    def of(cls, model: torch.nn.Module) -> "ModelShape":
        """Count the parameters of a (possibly PEFT-wrapped) transformers causal LM."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        head_module = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
        head_ids = {id(p) for p in head_module.parameters()} if head_module is not None else set()
        lookups = {id(p) for m in base.modules() if isinstance(m, torch.nn.Embedding)
                   for p in m.parameters(recurse=False)} - head_ids  # a tied embedding is the head
        counts = {"body": 0, "body_trainable": 0, "head": 0, "head_trainable": 0}
        for p in base.parameters():  # shared (tied) parameters come once
            if id(p) in lookups:
                continue
            part = "head" if id(p) in head_ids else "body"
            counts[part] += p.numel()
            if p.requires_grad:
                counts[f"{part}_trainable"] += p.numel()
        layers, width = _attention_shape(getattr(base, "config", None))
        return cls(**counts, layers=layers, width=width)


def _attention_shape(config: Any) -> tuple[int, int]:
    """(layers, query heads × head dim) from a transformers config; (0, 0) when it does not say."""
    if config is None:
        return 0, 0
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = getattr(text, "num_hidden_layers", None)
    heads = getattr(text, "num_attention_heads", None)
    hidden = getattr(text, "hidden_size", None)
    if not layers or not heads:
        return 0, 0
    head_dim = getattr(text, "head_dim", None) or (hidden // heads if hidden else 0)
    return int(layers), int(heads) * int(head_dim)


def training_flops(shape: ModelShape, lengths: Sequence[int], loss_tokens: int) -> float:
    """Model FLOPs of one optimizer step over samples of ``lengths`` tokens (see the module docstring)."""
    tokens = sum(lengths)
    squares = sum(n * n for n in lengths)
    return (float(4 * shape.body + 2 * shape.body_trainable) * tokens
            + float(4 * shape.head + 2 * shape.head_trainable) * loss_tokens
            + 12.0 * shape.layers * shape.width * squares)


class MfuMeter:
    """MFU of each step of one run: ``meter(samples, loss_tokens, seconds)`` → a fraction or None.

    Built once from the model and the device (:meth:`for_model`); ``None`` for every step when the
    device has no known peak (a CPU, an unlisted GPU).
    """

    def __init__(self, shape: ModelShape, peak_flops: float | None) -> None:
        self.shape = shape
        self.peak = peak_flops

    @classmethod
    def for_model(cls, model: torch.nn.Module, device: torch.device | str) -> "MfuMeter":
        return cls(ModelShape.of(model), peak_bf16_flops(device))

    def __call__(self, samples: Sequence[Sized], loss_tokens: int, seconds: float) -> float | None:
        if self.peak is None or seconds <= 0:
            return None
        return training_flops(self.shape, [len(s) for s in samples], loss_tokens) / seconds / self.peak
