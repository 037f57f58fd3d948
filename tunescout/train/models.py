"""Load a Hugging Face causal LM (optionally wrapped with LoRA) and save what the ecosystem loads."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import torch

from tunescout.builtins import BUILTIN_PREFIX, resolve_builtin

__all__ = [
    "load_model",
    "load_tokenizer",
    "resolve_attn_implementation",
    "resolve_device",
    "resolve_dtype",
    "save_model",
]

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks the first GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on a GPU that supports it; float32 on CPU, where bf16 matmuls are slow."""
    if dtype != "auto":
        return DTYPES[dtype]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def resolve_attn_implementation(attn: str, device: torch.device, dtype: torch.dtype) -> str:
    """``auto``: flash attention 2 when installed on a GPU in half precision, else SDPA."""
    if attn != "auto":
        return attn
    if (
        device.type == "cuda"
        and dtype in (torch.bfloat16, torch.float16)
        and importlib.util.find_spec("flash_attn") is not None
    ):
        return "flash_attention_2"
    return "sdpa"


def _resolve_model_path(path: str) -> tuple[str, dict[str, Any]]:
    """Resolve ``builtin:`` names (:mod:`tunescout.builtins`); a ``.gguf`` file loads from its
    folder with ``gguf_file=``."""
    if path.startswith(BUILTIN_PREFIX):
        path = str(resolve_builtin(path.removeprefix(BUILTIN_PREFIX)))
    if not path.endswith(".gguf"):
        return path, {}
    if importlib.util.find_spec("gguf") is None:
        raise ImportError("loading a .gguf model needs the gguf package: pip install 'tunescout[gguf]'")
    p = Path(path)
    return str(p.parent), {"gguf_file": p.name}


def load_tokenizer(path: str) -> Any:
    """Load a tokenizer by path, hub id or ``.gguf`` file; set a pad token if it has none."""
    from transformers import AutoTokenizer

    folder, extra = _resolve_model_path(path)
    tokenizer = AutoTokenizer.from_pretrained(folder, **extra)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    path: str,
    *,
    method: str = "full",
    lora_r: int = 16,
    lora_alpha: float = 32,
    lora_dropout: float = 0.05,
    lora_target_modules: str | list[str] = "all-linear",
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
    gradient_checkpointing: bool = False,
    device: torch.device | str = "cpu",
) -> torch.nn.Module:
    """Load a causal LM for training: full fine-tuning, or frozen base plus a LoRA adapter.

    Args:
        path: folder, hub id, or ``.gguf`` file (dequantized by transformers on load).
        method: ``full`` or ``lora``.
        dtype: weights dtype; LoRA adapter weights follow it.
        attn_implementation: ``sdpa``, ``eager`` or ``flash_attention_2``.
        gradient_checkpointing: recompute activations in backward to save memory.
        device: where the model lives.

    Returns:
        A ``PreTrainedModel`` (or ``PeftModel`` for LoRA) in train mode.
    """
    from transformers import AutoModelForCausalLM

    folder, extra = _resolve_model_path(path)
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=dtype, attn_implementation=attn_implementation, **extra
    )
    model.config.use_cache = False
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        if gradient_checkpointing:
            model.enable_input_require_grads()
        peft_config = LoraConfig(
            r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=lora_target_modules,
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, peft_config)
    elif method != "full":
        raise ValueError(f"unknown method {method!r}; expected 'full' or 'lora'")
    model.to(device)
    model.train()
    return model


def save_model(model: torch.nn.Module, tokenizer: Any, out_dir: str | Path, merge_lora: bool = False) -> Path:
    """Save a ``save_pretrained`` folder (full, or LoRA merged) or a PEFT adapter, with the tokenizer."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    is_peft = hasattr(model, "peft_config")
    if is_peft and merge_lora:
        model = model.merge_and_unload()
    config = model.get_base_model().config if is_peft and not merge_lora else model.config
    config.use_cache = True  # off only for training; whoever generates with the result wants the KV cache
    model.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    log.info("saved %s to %s", "adapter" if is_peft and not merge_lora else "model", out)
    return out


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
