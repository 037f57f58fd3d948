"""Load a Hugging Face causal LM (optionally wrapped with LoRA) and save what the ecosystem loads.

Every load is safe with files of unknown origin: nothing a model folder ships runs unless the user
opted in (``trust_remote_code``, passed to transformers explicitly: left unset, transformers asks
on stdin, and reads a "y" piped there as consent), pickled weights load with ``weights_only``
only, and what cannot be loaded (a cut-short ``.gguf``, a pickle that would run code, an
adapter whose base is gone) raises a :class:`ValueError` that names the file and the way out.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import mmap
import os
import pickle
import struct
from pathlib import Path
from typing import Any, Iterator

import torch

from tunescout.builtins import BUILTIN_PREFIX, resolve_builtin
from tunescout.train.accel import flex_refusal, model_supports_flex

__all__ = [
    "REMOTE_CODE_OPT_IN",
    "check_gguf",
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


def resolve_attn_implementation(attn: str, device: torch.device, dtype: torch.dtype, model: str | None = None,
                                trust_remote_code: bool = False) -> str:
    """``auto``: the kernel that makes packed rows cheapest where it can train this ``model``.

    Flash attention 2 when installed on a GPU in half precision (varlen kernels: a packed row
    costs what its samples cost alone); else flex attention where torch can train it and
    transformers has it for the architecture (its block mask skips the pairs between packed
    samples, which a dense SDPA mask computes and throws away); else SDPA. Off a CUDA GPU that is
    SDPA: torch has no flex attention backward on a CPU (:func:`tunescout.train.accel.flex_refusal`),
    and the cost model has constants for no other device. Reading ``model``'s config runs its
    own code only with ``trust_remote_code``, as loading it would.
    """
    if attn != "auto" or device.type != "cuda":
        return "sdpa" if attn == "auto" else attn
    if dtype in (torch.bfloat16, torch.float16) and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    if model is not None and flex_refusal("cuda") is None:
        folder, extra = _resolve_model_path(model)
        with _refusing_unsafe_code(folder):
            if model_supports_flex(folder, trust_remote_code=trust_remote_code, **extra):
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
    check_gguf(p)
    return str(p.parent), {"gguf_file": p.name}


# --- what a model folder may not do: run its code ---

REMOTE_CODE_OPT_IN = ("set `trust_remote_code: true` in the train config, or pass --trust-remote-code to "
                      "`tunescout eval`")
"""How a user allows a model's own code to run, quoted by every refusal."""

_REMOTE_CODE_FILES = ("config.json", "tokenizer_config.json")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def _remote_code_refusal(folder: str) -> str:
    """Why a model that needs its own code was not loaded, naming the files that ask for it."""
    asking = [str(Path(folder) / name) for name in _REMOTE_CODE_FILES if "auto_map" in _json_keys(Path(folder) / name)]
    where = " and ".join(asking) or f"the model {folder}"
    return (f"{where} asks to run Python code shipped with the model (its `auto_map`), for an architecture "
            "transformers has no class of its own for. tunescout runs a model's own code only when told to: "
            f"read that code first, and if you trust it, {REMOTE_CODE_OPT_IN}.")


def _json_keys(file: Path) -> set[str]:
    """The top-level keys of a JSON object file; none when it is missing or not one."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return set(data) if isinstance(data, dict) else set()


def _pickle_refusal(folder: str, exc: Exception) -> str:
    """Why pickled weights were not loaded, naming the file (found by loading each, ``weights_only``)."""
    where = f"a pickled weights file of {folder}"
    if Path(folder).is_dir():
        for file in sorted(p for p in Path(folder).iterdir() if p.suffix in _PICKLE_SUFFIXES and p.is_file()):
            try:
                torch.load(file, map_location="meta", weights_only=True)
            except pickle.UnpicklingError:
                where = str(file)
                break
            except Exception:  # noqa: BLE001 - a file torn in another way is not the one refused here
                continue
    reason = next((line.strip() for line in str(exc).splitlines() if "GLOBAL" in line), type(exc).__name__)
    return (f"{where}: refused: it is a pickle that holds more than tensors ({reason}), and loading it "
            "would run code (torch.load with weights_only=False), which tunescout never does. Use weights in "
            "safetensors format instead (model.safetensors / adapter_model.safetensors, written by "
            "save_pretrained), converted where you trust the file, or remove the pickle.")


@contextlib.contextmanager
def _refusing_unsafe_code(folder: str) -> Iterator[None]:
    """Turn transformers' and torch's refusals to run a model's code into one error naming the file.

    Both refuse already (``trust_remote_code=False``, ``weights_only=True``), but with a traceback
    that suggests the unsafe switch; this names the file and the safe way out instead.
    """
    try:
        yield
    except pickle.UnpicklingError as exc:
        raise ValueError(_pickle_refusal(folder, exc)) from exc
    except ValueError as exc:
        if "trust_remote_code" not in str(exc):
            raise
        raise ValueError(_remote_code_refusal(folder)) from exc


def _from_pretrained(auto_class: Any, path: str, trust_remote_code: bool, **kwargs: Any) -> Any:
    """``auto_class.from_pretrained`` on a resolved ``path``, with ``trust_remote_code`` always passed:
    left unset, transformers asks on stdin (even when it is not a terminal) whether to run the code."""
    folder, extra = _resolve_model_path(path)
    with _refusing_unsafe_code(folder):
        return auto_class.from_pretrained(folder, trust_remote_code=trust_remote_code, **extra, **kwargs)


# --- GGUF files: complete before transformers reads them ---

_GGUF_HEADER = struct.Struct("<4sIQQ")
"""Magic, version, tensor count, metadata count."""
_GGUF_VERSIONS = (2, 3)
_GGUF_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
"""Bytes of each fixed-size GGUF metadata value type (uint8 … float64, bool)."""
_GGUF_STRING, _GGUF_ARRAY, _GGUF_UINT32 = 8, 9, 4
_GGUF_MAX_DIMS = 4
_GGUF_DEFAULT_ALIGNMENT = 32


class _GGUFCutShort(Exception):
    """A part of the file runs past its end."""

    def __init__(self, what: str, end: int) -> None:
        super().__init__(what)
        self.what, self.end = what, end


class _GGUFMalformed(Exception):
    """A value no GGUF writer produces."""


class _GGUFBytes:
    """A bounds-checked cursor over a GGUF file's bytes: every read past the end says what was cut."""

    def __init__(self, buf: Any) -> None:
        self.buf, self.pos = buf, 0

    def need(self, n: int, what: str) -> None:
        """Check that ``n`` more bytes exist (also a bound on a count before looping over it)."""
        if self.pos + n > len(self.buf):
            raise _GGUFCutShort(what, self.pos + n)

    def take(self, n: int, what: str) -> int:
        """Advance over ``n`` bytes; their offset."""
        self.need(n, what)
        start, self.pos = self.pos, self.pos + n
        return start

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack_from(fmt, self.buf, self.take(struct.calcsize(fmt), what))

    def string(self, what: str) -> bytes:
        (n,) = self.unpack("<Q", what)
        start = self.take(n, what)
        return bytes(self.buf[start:self.pos])

    def skip_value(self, vtype: int, what: str) -> None:
        if vtype in _GGUF_SCALAR_SIZES:
            self.take(_GGUF_SCALAR_SIZES[vtype], what)
        elif vtype == _GGUF_STRING:
            self.take(self.unpack("<Q", what)[0], what)
        elif vtype == _GGUF_ARRAY:
            item, count = self.unpack("<IQ", what)
            if item in _GGUF_SCALAR_SIZES:
                self.take(count * _GGUF_SCALAR_SIZES[item], what)
                return
            self.need(count * 8, what)  # each string or array holds a length at least: a lying count ends here
            for _ in range(count):
                self.skip_value(item, what)
        else:
            raise _GGUFMalformed(f"{what} has unknown value type {vtype}")


def _gguf_tensor_bytes(name: bytes, dims: tuple[int, ...], ggml_type: int) -> int:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise _GGUFMalformed(f"tensor {name.decode(errors='replace')} has unknown type {ggml_type}") from None
    count = 1
    for d in dims:
        count *= d
    return count // block * size


def _gguf_extent(buf: Any) -> int:
    """The bytes a GGUF file's header, metadata, tensor infos and tensor data take, read from it."""
    r = _GGUFBytes(buf)
    _, version, n_tensors, n_kv = r.unpack(_GGUF_HEADER.format, "header")
    if version not in _GGUF_VERSIONS:
        raise _GGUFMalformed(f"GGUF version {version}; transformers reads versions {_GGUF_VERSIONS}")
    r.need(n_kv * 12, "metadata")  # a key length and a type at least per entry: a lying count ends here
    alignment = _GGUF_DEFAULT_ALIGNMENT
    for _ in range(n_kv):
        key = r.string("metadata")
        (vtype,) = r.unpack("<I", "metadata")
        if key == b"general.alignment" and vtype == _GGUF_UINT32:
            (alignment,) = r.unpack("<I", "metadata")
        else:
            r.skip_value(vtype, f"metadata {key.decode(errors='replace')}")
    if alignment < 1:
        raise _GGUFMalformed(f"general.alignment is {alignment}")
    r.need(n_tensors * 24, "tensor infos")  # name length, dimension count, type, offset
    end = 0
    for _ in range(n_tensors):
        name = r.string("tensor infos")
        (n_dims,) = r.unpack("<I", "tensor infos")
        if n_dims > _GGUF_MAX_DIMS:
            raise _GGUFMalformed(f"tensor {name.decode(errors='replace')} has {n_dims} dimensions")
        dims = r.unpack(f"<{n_dims}Q", "tensor infos")
        ggml_type, offset = r.unpack("<IQ", "tensor infos")
        end = max(end, offset + _gguf_tensor_bytes(name, dims, ggml_type))
    data_start = -(-r.pos // alignment) * alignment
    return data_start + end


def check_gguf(path: str | Path) -> None:
    """Refuse a ``.gguf`` file that is not one, or is cut short, before transformers reads it.

    transformers fails on such a file deep in its reader (``struct.error``, a reshape error);
    this walks the header, metadata and tensor table (not the tensor data, which is only
    measured) and says what is wrong with the file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a GGUF file, is malformed, or is truncated (with the byte
            where what it holds ends and where the file ends).
    """
    path = Path(path)
    with path.open("rb") as fh:
        head, size = fh.read(_GGUF_HEADER.size), os.fstat(fh.fileno()).st_size
        if head[:4] != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file: it {_gguf_start(head)}. Give a complete .gguf model "
                             "file, a save_pretrained folder or a hub id")
        try:
            if size < _GGUF_HEADER.size:
                raise _GGUFCutShort("header", _GGUF_HEADER.size)
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                needed = _gguf_extent(buf)
            if needed > size:
                raise _GGUFCutShort("tensor data", needed)
        except _GGUFCutShort as cut:
            raise ValueError(f"{path} is a truncated GGUF file: its {cut.what} runs to byte {cut.end:,} but the file "
                             f"ends at byte {size:,} (a download or copy cut short). Fetch or copy the file "
                             "again") from None
        except _GGUFMalformed as exc:
            raise ValueError(f"{path} is not a valid GGUF file ({exc}). Give a complete .gguf model file, "
                             "a save_pretrained folder or a hub id") from None


def _gguf_start(head: bytes) -> str:
    if len(head) < 4:
        return f"is only {len(head)} bytes long"
    return f"starts with {head[:4]!r}, not b'GGUF'"


def load_tokenizer(path: str, trust_remote_code: bool = False) -> Any:
    """Load a tokenizer by path, hub id or ``.gguf`` file; set a pad token if it has none.

    Args:
        trust_remote_code: let a tokenizer that ships its own Python code run it (refused otherwise).
    """
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, path, trust_remote_code)
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
    trust_remote_code: bool = False,
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
        trust_remote_code: let a model that ships its own Python code run it (refused otherwise).

    Returns:
        A ``PreTrainedModel`` (or ``PeftModel`` for LoRA) in train mode.

    Raises:
        ValueError: the model needs its own code and ``trust_remote_code`` is off, its weights
            are a pickle that would run code, or its ``.gguf`` file is not a complete one.
    """
    from transformers import AutoModelForCausalLM

    model = _from_pretrained(AutoModelForCausalLM, path, trust_remote_code, dtype=dtype,
                             attn_implementation=attn_implementation)
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
    if not (is_peft and not merge_lora):
        _forget_gguf(model)
    model.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    log.info("saved %s to %s", "adapter" if is_peft and not merge_lora else "model", out)
    return out


def describe_model(path: str, trust_remote_code: bool = False) -> tuple[str, int]:
    """``(model_type, parameter count)`` of a model, from its config alone (built on the meta
    device: no weights are read or allocated), so that advice made for other models can say so."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = _from_pretrained(AutoConfig, path, trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return str(getattr(config, "model_type", "") or "?"), sum(p.numel() for p in model.parameters())


def is_gguf(path: str) -> bool:
    """Whether a model path (a ``builtin:`` name included) loads from a ``.gguf`` file."""
    if path.startswith(BUILTIN_PREFIX):
        path = str(resolve_builtin(path.removeprefix(BUILTIN_PREFIX)))
    return path.endswith(".gguf")


def _forget_gguf(model: torch.nn.Module) -> None:
    """A model read from a GGUF file was de-quantised on load: its weights are plain tensors, but
    transformers still marks it quantised and refuses to save it (which lost merged LoRA runs and
    full fine-tuning of GGUF bases after training). Drop the mark, so it saves as the float model
    it is, in safetensors, loadable without the GGUF file."""
    quantizer = getattr(model, "hf_quantizer", None)
    method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
    if quantizer is not None and str(getattr(method, "value", method)).lower() == "gguf":
        model.hf_quantizer = None
        for attr in ("is_quantized", "quantization_method"):
            if hasattr(model, attr):
                try:
                    delattr(model, attr)
                except AttributeError:
                    pass
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config


def export_merged(model_dir: str | Path, out_dir: str | Path, trust_remote_code: bool = False) -> Path:
    """Save a trained model as one plain ``save_pretrained`` folder: a LoRA adapter merged into its
    base. For an adapter on a GGUF base, the only form that loads elsewhere: the adapter's own
    config can name the base only as a folder that needs the GGUF file name to load. Give the run
    directory, whose ``config.yaml`` names the base as it was given to training."""
    model, tokenizer, _ = load_pretrained(str(model_dir), trust_remote_code=trust_remote_code)
    return save_model(model, tokenizer, out_dir, merge_lora=True)


ADAPTER_CONFIG = "adapter_config.json"


def _recorded_base(adapter_config: Path) -> str | None:
    """The base model an adapter's ``adapter_config.json`` names."""
    try:
        recorded = json.loads(adapter_config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{adapter_config}: not a PEFT adapter config (not JSON: {exc})") from None
    return recorded.get("base_model_name_or_path") if isinstance(recorded, dict) else None


def _run_dir_base(run_dir: Path) -> tuple[str | None, str | None]:
    """(model, tokenizer) a run directory was trained from, from its ``config.yaml``."""
    import yaml

    try:
        raw = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None, None
    return raw.get("model") or None, raw.get("tokenizer") or None


def _missing_local(path: str) -> bool:
    """Whether ``path`` is meant as a local file or folder (not a hub id ``org/name`` or a
    ``builtin:`` name) and does not exist."""
    if path.startswith(BUILTIN_PREFIX) or Path(path).exists():
        return False
    return path.startswith((".", "/", "~")) or path.endswith(".gguf") or path.count("/") > 1


def _missing_base(adapter: str, base: str, given: bool, why: str) -> str:
    """Why an adapter's base model cannot be loaded, and how to name another."""
    if given:
        return f"--base {base}: {why}; give the adapter's base model as a folder, .gguf file, hub id or builtin: name"
    return (f"the adapter {adapter} was trained on the base model {base}, which {why}. Pass --base with that base "
            "model (its folder, .gguf file, hub id or builtin: name) to load the adapter on it")


def _inference_source(path: str, base: str | None) -> tuple[str, str, str | None, str | None]:
    """``(kind, path, base, tokenizer)`` of what ``path`` names: ``model`` (a folder, hub id, ``.gguf``
    or ``builtin:``) or ``adapter`` (a PEFT folder, loaded on ``base``)."""
    p = Path(path)
    tokenizer, given = None, base is not None
    if path.startswith(BUILTIN_PREFIX) or path.endswith(".gguf") or not p.exists():
        if _missing_local(path):
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
            base = _recorded_base(p / ADAPTER_CONFIG)
        if not base:
            raise ValueError(f"{p} is a PEFT adapter that does not name its base model; pass it with --base")
        if _missing_local(base):
            raise ValueError(_missing_base(str(p), base, given, "does not exist"))
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
    trust_remote_code: bool = False,
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
        trust_remote_code: let a model or tokenizer that ships its own Python code run it
            (refused otherwise; a PEFT adapter itself holds no code).

    Returns:
        ``(model in eval mode with its KV cache on, tokenizer with a pad token, {"kind", "path", "base"})``.

    Raises:
        FileNotFoundError: a local path that does not exist.
        ValueError: a folder (or file) that is not a model, an adapter without a base or whose
            base is missing, a model that needs its own code without ``trust_remote_code``,
            weights pickled with more than tensors, or a ``.gguf`` file that is not a complete one.
    """
    from transformers import AutoModelForCausalLM

    given = base is not None
    kind, where, base, tokenizer_path = _inference_source(str(path), base)
    try:
        model = _from_pretrained(AutoModelForCausalLM, base if kind == "adapter" else where, trust_remote_code,
                                 dtype=dtype, attn_implementation=attn_implementation)
    except OSError as exc:  # e.g. a hub id that is neither cached nor reachable
        if kind != "adapter":
            raise
        raise ValueError(_missing_base(where, base, given, f"could not be loaded ({_first_line(exc)})")) from exc
    if kind == "adapter":
        from peft import PeftModel

        with _refusing_unsafe_code(where):
            model = PeftModel.from_pretrained(model, where)
    config = model.get_base_model().config if kind == "adapter" else model.config
    config.use_cache = True
    tokenizer = load_tokenizer(tokenizer_path or where, trust_remote_code)
    model.to(device)
    model.eval()
    return model, tokenizer, {"kind": kind, "path": where, **({"base": base} if base else {})}


def _first_line(exc: BaseException) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
