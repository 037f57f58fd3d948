"""The GPU path: choices that make a step faster without changing what it computes.

Each is a small function the loop calls in a line: the AdamW implementation, optional Liger
kernels and ``torch.compile``, whether the attention kernel takes explicit sequence boundaries
(flash attention's varlen kernels), and whether an architecture can be packed at all.

Why packing can be refused: tunescout packs several samples into a row and relies on the model
to keep attention inside each sample from the position ids that restart at 0. Transformers does
that for most decoders (a block-diagonal mask for SDPA/eager, varlen kernels for flash
attention), but not for architectures whose mask is built without the position ids (ALiBi
models such as Bloom and MPT, OPT's learned positions) nor for recurrent / linear-attention
models, where a state flows from one sample into the next. For those the plan falls back to one
sample per row: rows of a micro-batch are padded on the right, and a causal model never looks at
tokens to its right, so each sample computes exactly what it computes alone (a test proves it
on a tiny Bloom). Slower than packing, never wrong.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import logging
from typing import Any, Iterable

import torch

from tunescout.config import ConfigError

__all__ = ["COMPILE_BACKEND", "LIGER_HINT", "UNPACKABLE_MODEL_TYPES", "VARLEN_KERNELS", "adamw_kwargs",
           "apply_liger", "check_kernels", "compile_model", "flex_refusal", "make_optimizer", "model_supports_flex",
           "packing_refusal", "uses_varlen_kernel"]

log = logging.getLogger("tunescout.train")

VARLEN_KERNELS = ("flash_attention_2", "flash_attention_3")
"""Attention implementations that take explicit sequence boundaries (``cu_seq_lens_*``)."""

LIGER_HINT = "liger: true needs the liger-kernel package: pip install 'tunescout[liger]'"

COMPILE_BACKEND = "inductor"
"""The ``torch.compile`` backend of ``compile: true`` (tests swap in ``eager`` to stay fast on CPU)."""

UNPACKABLE_MODEL_TYPES = frozenset({
    # masks built without position ids: ALiBi, learned absolute positions
    "bloom", "mpt", "opt", "biogpt", "xglm",
    # recurrent and linear-attention (or hybrid) models: a state runs across sample boundaries
    "mamba", "mamba2", "falcon_mamba", "rwkv", "recurrent_gemma", "xlstm", "jamba", "zamba", "zamba2",
    "bamba", "falcon_h1", "granitemoehybrid", "nemotron_h", "lfm2", "qwen3_next", "minimax",
})
"""Model types whose packed samples would see each other: trained one sample per row instead."""


def uses_varlen_kernel(attn_implementation: str) -> bool:
    """Whether the attention kernel runs packed rows by explicit boundaries (flash attention 2/3)."""
    return attn_implementation in VARLEN_KERNELS


@functools.lru_cache(maxsize=None)
def flex_refusal(device_type: str) -> str | None:
    """Why flex attention cannot train on this device type, or None when it can.

    Asked of torch itself, by a forward and backward pass of flex attention on a few tiny tensors
    (once per process; torch traces it unfused, with a warning that it is not compiled): torch
    2.13 has no backward for it on a CPU, and a later torch that adds one is used without a change
    here. On a GPU, the fused kernel that training compiles to needs Triton, so its absence refuses.
    """
    try:
        from torch.nn.attention.flex_attention import flex_attention
    except ImportError:
        return f"torch {torch.__version__} has no flex attention"
    if device_type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            return "flex attention compiles to Triton kernels on a GPU, and Triton is not available"
    try:
        q = torch.randn(1, 1, 16, 8, device=device_type, requires_grad=True)
        flex_attention(q, q, q).sum().backward()
    except Exception as exc:  # noqa: BLE001 - whatever torch raises is the reason, given to the user
        return f"torch {torch.__version__} cannot train flex attention on {device_type}: {exc}"
    return None


def model_supports_flex(path: str, **load: Any) -> bool:
    """Whether transformers has flex attention for this model's architecture and packing it pays.

    Read from the config on disk (``load``: e.g. ``gguf_file``); an architecture transformers does
    not map to a causal LM is not chosen, nor one whose samples cannot be packed
    (:data:`UNPACKABLE_MODEL_TYPES`: one sample per row gains nothing from a block mask). A config
    that cannot be read raises, as loading the model would: a silent fallback could resolve
    differently on a resume.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    config = AutoConfig.from_pretrained(path, **load)
    if config.model_type in UNPACKABLE_MODEL_TYPES:
        return False
    try:
        model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except KeyError:
        return False
    return bool(getattr(model_class, "_supports_flex_attn", False))


def adamw_kwargs(params: Iterable[torch.Tensor]) -> dict[str, Any]:
    """The AdamW implementation for these parameters: ``fused`` when all live on a CUDA device.

    The fused kernel updates every parameter in one launch per step instead of a few per
    parameter tensor (HF Trainer's default there too, ``adamw_torch_fused``). On a CPU the
    default implementation is kept: it is what every CPU run so far trained with, so their
    numbers and resumes stay as they were.
    """
    devices = {p.device.type for p in params}
    return {"fused": True} if devices == {"cuda"} else {}


def make_optimizer(params: list[torch.nn.Parameter], *, lr: float, betas: tuple[float, float], eps: float,
                   weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable ``params``, weight decay on matrices only.

    Decaying norms and biases towards zero is never wanted, so vectors get none.
    """
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **adamw_kwargs(params))


def check_kernels(*, liger: bool, device: torch.device, attn: str = "sdpa") -> None:
    """Fail at the start of a run, before any data is read, when an asked-for kernel cannot run.

    Raises:
        ImportError: ``liger: true`` without the liger-kernel package (with the install hint).
        ConfigError: ``liger: true`` on a device other than a CUDA GPU (its kernels are Triton);
            ``attn_implementation: flex_attention`` where torch cannot train it.
    """
    if liger:
        if importlib.util.find_spec("liger_kernel") is None:
            raise ImportError(LIGER_HINT)
        if device.type != "cuda":
            raise ConfigError(f"liger: true needs a CUDA GPU (its kernels are Triton), but the run is on "
                              f"{device.type}; set liger: false")
    if attn == "flex_attention" and (why := flex_refusal(device.type)):
        raise ConfigError(f"attn_implementation: flex_attention: {why}; use sdpa (packed rows keep their "
                          "block-diagonal mask) or train on a CUDA GPU")


def apply_liger(model: torch.nn.Module) -> None:
    """Swap in Liger's fused kernels (RMSNorm, RoPE, SwiGLU/GeGLU), in place, before any PEFT wrap.

    Its cross-entropy kernels stay off: tunescout computes the loss itself, summed in float32
    over the effective batch's loss tokens (:mod:`tunescout.train.loss`), and computes logits
    only at loss positions, which already avoids most of what fused linear cross-entropy saves.

    Raises:
        ImportError: the liger-kernel package is missing (with the install hint).
    """
    try:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except ImportError:
        raise ImportError(LIGER_HINT) from None
    model_type = getattr(model.config, "model_type", None)
    if model_type not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        log.warning("liger: no Liger kernels for model type %r; training without them", model_type)
        return
    # Liger's defaults for the rest (RMSNorm, RoPE, SwiGLU/GeGLU where the model type has them).
    _apply_liger_kernel_to_instance(model=model, cross_entropy=False, fused_linear_cross_entropy=False)
    log.info("liger: fused kernels applied to %s", model_type)


def compile_model(model: torch.nn.Module, backend: str | None = None) -> int:
    """``torch.compile`` the model's repeated blocks in place (regional compilation).

    Each decoder layer (the classes a model lists in ``_no_split_modules``) is compiled rather
    than the whole model: layers share one compiled graph, so compile time is that of one layer
    whatever the depth, and the parts of a forward that would break a whole-model graph anyway
    (mask construction from packed position ids, logits at loss positions only) stay eager.
    ``dynamic=True`` because every micro-batch has another length. In place, so parameter names,
    checkpoints and ``save_pretrained`` are unchanged. Compiled blocks can be sharded with FSDP2
    afterwards (torchtitan's order: compile each block, then ``fully_shard``).

    Returns:
        The number of modules compiled (the whole model counts as one when it lists no blocks).
    """
    backend = backend or COMPILE_BACKEND
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    block_names = set(getattr(base, "_no_split_modules", None) or ())
    blocks = [m for m in base.modules() if type(m).__name__ in block_names]
    for block in blocks or [model]:
        block.compile(backend=backend, dynamic=True)
    log.info("compile: %d %s compiled (backend %s)", len(blocks) or 1,
             f"{type(blocks[0]).__name__} blocks" if blocks else "whole model", backend)
    return len(blocks) or 1


def packing_refusal(model: torch.nn.Module) -> str | None:
    """Why this model's packed samples would attend to each other, or None when packing is safe.

    Refused: a model type in :data:`UNPACKABLE_MODEL_TYPES`, Falcon with ALiBi, and any model
    whose forward does not take ``position_ids`` (without them nothing marks where a sample
    starts).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type in UNPACKABLE_MODEL_TYPES:
        return f"model type {model_type!r} builds its attention without the position ids that separate packed samples"
    if model_type == "falcon" and getattr(config, "alibi", False):
        return "model type 'falcon' with alibi: true builds its attention bias without position ids"
    if "position_ids" not in inspect.signature(type(base).forward).parameters:
        return f"{type(base).__name__}.forward takes no position_ids, so packed samples cannot be told apart"
    return None
