"""The GPU half of ``throughput.py`` (``--device cuda``): the model, the rows, the FLOPs, the table.

Everything else — the generated chats, tunescout's tokenisation and step order handed to every
trainer, one process per trainer, the step clock and the token counter — is ``throughput.py``'s
own code, run with ``device: cuda`` in the job. What differs on a GPU:

* **Model**: a ~1.1B-parameter Llama built from a config with random weights (hidden 2048, 16
  layers, 32 heads / 8 KV heads, MLP 8192, vocabulary 32,768, untied head; the shape of
  Llama-3.2-1B with a smaller vocabulary), saved once in bf16 and loaded by every trainer in
  float32. Random weights train as fast as real ones; nothing is downloaded. The tokenizer is the
  benchmark's 2,048-token BPE, so token ids use a corner of the vocabulary, but the output layer
  still computes all 32,768 logits, as a real one does.
* **Arithmetic**: bf16 autocast over float32 master weights in every trainer (tunescout's
  ``mixed_precision``, HF/TRL's ``bf16=True``), AdamW fused (tunescout on CUDA, HF/TRL's default
  ``adamw_torch_fused``), flash attention 2 for all when ``flash_attn`` is installed, else SDPA.
* **Rows**: tunescout with its defaults; with ``compile: true``; with ``liger: true``; HF Trainer
  and TRL SFTTrainer padded (8 samples per micro-batch × 8) and TRL ``padding_free=True``.
  TRL's ``packing=True`` is left out: its steps hold other samples, so its FLOPs differ.
* **Columns**: tokens/s, the ratio to TRL's default, MFU (the FLOPs the timed samples need,
  :mod:`tunescout.train.flops`, the same figure for every row as every row trains the same
  samples, over wall time and the device's dense bf16 peak), peak GPU memory
  (``torch.cuda.max_memory_allocated``, this trainer's process only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

LLAMA_1B_SHAPE = {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                  "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32768}


def build_llama_1b(tokenizer_dir: Path, out: Path, seed: int, max_positions: int) -> Path:
    """A random ~1.1B Llama with the benchmark's tokenizer, saved in bf16 (built on the GPU: seconds)."""
    if (out / "config.json").exists():
        return out
    import shutil

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(**LLAMA_1B_SHAPE, max_position_embeddings=max_positions, tie_word_embeddings=False,
                         rms_norm_eps=1e-5, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    del model
    torch.cuda.empty_cache()
    return out


def timed_flops(model_dir: Path, steps: list[list[tuple[int, int]]]) -> float:
    """Model FLOPs of the timed steps, from the model's config on the meta device (no weights).

    ``steps`` holds, per timed step, ``(tokens, loss tokens)`` of each sample. Full fine-tuning.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunescout.train.flops import ModelShape, training_flops

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    shape = ModelShape.of(model)
    return sum(training_flops(shape, [n for n, _ in step], sum(k for _, k in step)) for step in steps)


def gpu_info() -> dict[str, Any]:
    """The GPU, CUDA and kernel packages, for the JSON and the table's header."""
    import importlib.util

    import torch

    from tunescout.train.flops import peak_bf16_tflops_for

    name = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"gpu": name, "cuda": torch.version.cuda, "peak_bf16_tflops": peak_bf16_tflops_for(name) if name else None,
            "flash_attn": importlib.util.find_spec("flash_attn") is not None,
            "liger_kernel": importlib.util.find_spec("liger_kernel") is not None}


def _gb(mb: float | None) -> str:
    return f"{mb / 1024:.1f} GB" if mb else "-"


def format_gpu_table(model: str, info: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Throughput, the ratio to TRL's default, MFU and peak GPU memory, one row per trainer."""
    ref = next((r.get("tokens_per_s") for r in rows if r["key"] == "trl-sft" and r.get("status") == "ok"), None)
    spec, data, gpu = info["spec"], info["data"], info["gpu"]
    lines = [
        (f"== {model}: full fine-tuning, {info['params']} | {gpu['gpu']} (peak {gpu['peak_bf16_tflops']} TFLOP/s "
         f"bf16) | effective batch {spec['batch_size']} samples x {spec['steps']} timed steps (+1 warm-up) | "
         f"max_length {spec['max_length']} | bf16 autocast, float32 weights, {info['attn']}"),
        (f"   samples: {data['n_samples']} chats, {data['length_min']}-{data['length_max']} tokens "
         f"(median {data['length_median']}, mean {data['length_mean']}); timed window holds "
         f"{data['timed_tokens']:,} real tokens, {data['timed_flops'] / 1e12:,.0f} TFLOPs of model work"),
        "",
        f"{'trainer':<38} {'micro-batching':<40} {'tokens/s':>9} {'x TRL':>6} {'MFU':>6} {'peak GPU':>9} "
        f"{'pad %':>6} {'timed s':>7}",
    ]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"{r['label']:<38} FAILED: {r.get('error', '?')}")
            continue
        tps = r["tokens_per_s"]
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
        lines.append(f"{r['label']:<38} {r['batching']:<40} {tps:>9,.0f} {(f'{tps / ref:.2f}x' if ref else '-'):>6} "
                     f"{mfu:>6} {_gb(r.get('peak_gpu_mb')):>9} {100 * r['padding_fraction']:>5.1f}% "
                     f"{r['timed_s']:>7.2f}")
    notes = [f"   note [{r['label'].strip()}]: {n}"
             for r in rows if r.get("status") == "ok" for n in r.get("notes", [])]
    legend = ("   tokens/s: real (non-padding) input tokens / wall seconds of the timed steps (CUDA synchronised at "
              "each step end); x TRL: over TRL SFTTrainer's default; MFU: the timed samples' model FLOPs "
              "(6N per token, attention per sample, output layer on loss tokens) / wall time / the GPU's dense "
              "bf16 peak; peak GPU: torch.cuda.max_memory_allocated of the trainer's process")
    return "\n".join(lines + ["", legend] + notes)
