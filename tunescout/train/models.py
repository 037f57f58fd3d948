"""Load a Hugging Face causal LM (optionally wrapped with LoRA) and save what the ecosystem loads."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import torch

from tunescout.builtins import BUILTIN_PREFIX, resolve_builtin
from tunescout.train.accel import flex_refusal, model_supports_flex

__all__ = [
    "load_model",
    "load_pretrained",
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


def resolve_attn_implementation(attn: str, device: torch.device, dtype: torch.dtype, model: str | None = None) -> str:
    """``auto``: the kernel that makes packed rows cheapest where it can train this ``model``.

    Flash attention 2 when installed on a GPU in half precision (varlen kernels: a packed row
    costs what its samples cost alone); else flex attention where torch can train it and
    transformers has it for the architecture (its block mask skips the pairs between packed
    samples, which a dense SDPA mask computes and throws away); else SDPA. Off a CUDA GPU that is
    SDPA: torch has no flex attention backward on a CPU (:func:`tunescout.train.accel.flex_refusal`),
    and the cost model has constants for no other device.
    """
    if attn != "auto" or device.type != "cuda":
        return "sdpa" if attn == "auto" else attn
    if dtype in (torch.bfloat16, torch.float16) and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    if model is not None and flex_refusal("cuda") is None:
        folder, extra = _resolve_model_path(model)
        if model_supports_flex(folder, **extra):
            return "flex_attention"
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
    liger: bool = False,
) -> torch.nn.Module:
    """Load a causal LM for training: full fine-tuning, or frozen base plus a LoRA adapter.

    Args:
        path: folder, hub id, or ``.gguf`` file (dequantized by transformers on load).
        method: ``full`` or ``lora``.
        dtype: weights dtype; LoRA adapter weights follow it.
        attn_implementation: a transformers attention implementation (``sdpa``, ``eager``,
            ``flash_attention_2``/``3``, ``flex_attention``), resolved from ``auto`` already.
        gradient_checkpointing: recompute activations in backward to save memory.
        device: where the model lives.
        liger: swap in Liger's fused kernels (:func:`tunescout.train.accel.apply_liger`), on
            the base model before any adapter wraps its layers.

    Returns:
        A ``PreTrainedModel`` (or ``PeftModel`` for LoRA) in train mode.
    """
    from transformers import AutoModelForCausalLM

    folder, extra = _resolve_model_path(path)
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=dtype, attn_implementation=attn_implementation, **extra
    )
    model.config.use_cache = False
    if liger:
        from tunescout.train.accel import apply_liger

        apply_liger(model)
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


ADAPTER_CONFIG = "adapter_config.json"


def _run_dir_base(run_dir: Path) -> tuple[str | None, str | None]:
    """(model, tokenizer) a run directory was trained from, from its ``config.yaml``."""
    import yaml

    try:
        raw = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None, None
    return raw.get("model") or None, raw.get("tokenizer") or None


def _inference_source(path: str, base: str | None) -> tuple[str, str, str | None, str | None]:
    """``(kind, path, base, tokenizer)`` of what ``path`` names: ``model`` (a folder, hub id, ``.gguf``
    or ``builtin:``) or ``adapter`` (a PEFT folder, loaded on ``base``)."""
    p = Path(path)
    tokenizer = None
    if path.startswith(BUILTIN_PREFIX) or path.endswith(".gguf") or not p.exists():
        if not p.exists() and (path.startswith((".", "/", "~")) or path.endswith(".gguf")):
            raise FileNotFoundError(f"{path}: no such model file or folder")
        return "model", path, None, None
    if not p.is_dir():
        raise ValueError(f"{path} is a file, not a model: give a save_pretrained folder, a PEFT adapter folder, "
                         "a run directory, a .gguf file or a builtin: name")
    if (p / "config.yaml").exists() and not (p / "config.json").exists() and not (p / ADAPTER_CONFIG).exists():
        if not (p / "model").is_dir():  # a tunescout run directory: its model is in model/
            raise ValueError(f"{path} is a run directory without a saved model (model/ is missing: trained with "
                             "save_model: false, or not finished)")
        trained_from, tokenizer = _run_dir_base(p)
        base = base or trained_from
        p = p / "model"
    if (p / ADAPTER_CONFIG).exists():
        if base is None:
            import json

            base = json.loads((p / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
        if not base:
            raise ValueError(f"{p} is a PEFT adapter that does not name its base model; pass the base model")
        tokenizer = str(p) if (p / "tokenizer_config.json").exists() else (tokenizer or base)
        return "adapter", str(p), base, tokenizer
    if (p / "config.json").exists():
        return "model", str(p), None, str(p) if (p / "tokenizer_config.json").exists() else tokenizer
    raise ValueError(f"{path} is not a model: no config.json (a save_pretrained folder), {ADAPTER_CONFIG} (a PEFT "
                     "adapter) or model/ with config.yaml (a tunescout run directory)")


def load_pretrained(
    path: str,
    *,
    base: str | None = None,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
    device: torch.device | str = "cpu",
) -> tuple[torch.nn.Module, Any, dict[str, str]]:
    """Load a trained model to evaluate or generate with, whatever shape it was saved in.

    One loader for everything tunescout writes or reads: a ``save_pretrained`` folder or hub
    id, a PEFT adapter (loaded on its base, kept as a ``PeftModel`` so it is scored as trained),
    a run directory (its ``model/``; an adapter's base is the ``model`` its ``config.yaml``
    names, which also covers bases given as ``builtin:`` names or ``.gguf`` files), a ``.gguf``
    file, or a ``builtin:`` name.

    Args:
        path: what to load.
        base: the base model of an adapter, overriding the one it records.
        dtype: weights dtype.
        attn_implementation: a transformers attention implementation (``sdpa``, ``eager``,
            ``flash_attention_2``/``3``, ``flex_attention``), resolved from ``auto`` already.
        device: where the model goes.

    Returns:
        ``(model in eval mode with its KV cache on, tokenizer with a pad token, {"kind", "path", "base"})``.

    Raises:
        FileNotFoundError: a local path that does not exist.
        ValueError: a folder (or file) that is not a model, or an adapter without a base.
    """
    from transformers import AutoModelForCausalLM

    kind, where, base, tokenizer_path = _inference_source(str(path), base)
    folder, extra = _resolve_model_path(base if kind == "adapter" else where)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation=attn_implementation,
                                                 **extra)
    if kind == "adapter":
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, where)
    config = model.get_base_model().config if kind == "adapter" else model.config
    config.use_cache = True
    tokenizer = load_tokenizer(tokenizer_path or where)
    model.to(device)
    model.eval()
    return model, tokenizer, {"kind": kind, "path": where, **({"base": base} if base else {})}


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
