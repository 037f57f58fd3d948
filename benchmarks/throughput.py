"""Training throughput: tunescout's padding-free loop against HF Trainer and TRL SFTTrainer (CPU or GPU).

Every trainer trains the same model on the same tokenized samples, in the same order, with the same
effective batch (samples per optimizer step) and the same number of optimizer steps. Only the way a
trainer turns an effective batch into tensors differs, and that is what is measured:

* ``tunescout``: :func:`tunescout.train.loop.train` with its default plan (the cost model's
  choice of rows and micro-batches for each batch, ``tunescout/train/stepcost.py``), run with its
  default token budget and with a budget of ``max_length``;
* ``hf-trainer``: ``transformers.Trainer`` with ``DataCollatorForSeq2Seq`` (right padding, labels
  padded with -100), ``per_device_train_batch_size × gradient_accumulation_steps`` = the batch;
* ``trl-sft``: TRL ``SFTTrainer`` with its default (padding) collator;
* ``trl-padding-free``: TRL ``SFTTrainer`` with ``padding_free=True``;
* ``trl-packing``: TRL ``SFTTrainer`` with ``packing=True`` (BFD packing into ``max_length`` rows;
  this one changes what a step holds: the batch is counted in packed rows, not samples).

Throughput is real (non-padding) input tokens divided by the wall time of optimizer steps 2..N:
step 1 is a warm-up for every trainer. The end of every optimizer step is stamped by a sink passed
to tunescout's ``train()`` (its ``telemetry.jsonl`` gives the same window and the token counts) and
by a callback's ``on_step_end`` for HF/TRL, where a wrapper around ``training_step`` counts the real
tokens of every micro-batch. Both windows include collation of the timed steps and exclude model
loading and tokenisation. Process CPU time is stamped too: with one thread per trainer (the
default, ``--threads``) it barely moves when other processes share the cores, so tokens per
CPU-second is the number to trust on a busy machine. Each trainer runs in its own process, so the
peak RSS it reports is its own.

On a GPU, ``--device cuda`` runs the same code on a ~1.1B Llama in bf16 against HF Trainer and TRL
(default and ``padding_free``) and adds MFU and peak GPU memory, with tunescout also run with
flex attention (against its default kernel: flash attention when installed, else SDPA with a
mask); what differs is in ``throughput_gpu.py``.

Run: ``.venv/bin/python benchmarks/throughput.py [--model tiny|smollm2|all] [--device cpu|cuda]``;
see README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "benchmarks" / "out"
IGNORE = -100
WORKER_TIMEOUT_S = 1200

# Workers never touch the network and stay quiet on stdout.
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "TRANSFORMERS_VERBOSITY": "error", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
       "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}


# ----------------------------------------------------------------------------------------------
# What is run
# ----------------------------------------------------------------------------------------------


@dataclass
class ModelSpec:
    """One benchmarked model and the budget that keeps its runs to a few minutes on 2 cores."""

    name: str
    method: str
    """``full`` fine-tuning or ``lora`` (r=16, alpha=32, dropout 0.05, all linear layers)."""
    batch_size: int
    """Effective batch in samples per optimizer step, for every trainer."""
    steps: int
    """Timed optimizer steps; one untimed warm-up step runs before them."""
    micro_batch: int
    """``per_device_train_batch_size`` of the HF/TRL runs (gradient accumulation makes up the rest)."""
    max_length: int = 1024
    learning_rate: float = 1e-4
    min_tokens: int = 20
    max_tokens: int = 1000
    hidden: int = 256
    """Width of the tiny Llama (its MLP is 4x that); the other models ignore it."""


MODELS = {
    "tiny": ModelSpec("tiny", "full", batch_size=16, steps=4, micro_batch=4),
    "smollm2": ModelSpec("smollm2", "lora", batch_size=8, steps=3, micro_batch=4),
    # GPU only (throughput_gpu.py): about 37k tokens a step, a second or less each on an H100.
    "llama-1b": ModelSpec("llama-1b", "full", batch_size=64, steps=8, micro_batch=8, max_length=2048,
                          learning_rate=1e-5, min_tokens=64, max_tokens=2048),
}
DEVICE_MODELS = {"cpu": ["tiny", "smollm2"], "cuda": ["llama-1b"]}
"""What ``--model all`` runs on each device."""
TINY_SHAPE = {"hidden_size": 256, "num_layers": 4, "vocab_size": 2048, "intermediate_size": 1024,
              "num_heads": 4, "num_kv_heads": 2}


@dataclass
class Variant:
    """One trainer configuration (a row of the table)."""

    key: str
    label: str
    kind: str
    """``tunescout``, ``hf`` or ``trl``."""
    options: dict[str, Any] = field(default_factory=dict)


def variants(spec: ModelSpec, device: str = "cpu") -> list[Variant]:
    """The rows run for a model, reference (tunescout with its defaults) first."""
    from tunescout.config import TrainConfig

    default_budget = TrainConfig.of().max_tokens_per_micro_batch
    if device == "cuda":
        mb = spec.micro_batch
        return [
            Variant("tunescout", f"tunescout (defaults, budget {default_budget} tok)", "tunescout", {"budget": None}),
            Variant("tunescout-flex", "tunescout attn flex_attention", "tunescout",
                    {"budget": None, "attn": "flex_attention"}),
            Variant("tunescout-compile", "tunescout compile: true", "tunescout", {"budget": None, "compile": True}),
            Variant("tunescout-liger", "tunescout liger: true", "tunescout", {"budget": None, "liger": True}),
            Variant("hf-trainer", "HF Trainer + DataCollatorForSeq2Seq", "hf", {"micro_batch": mb}),
            Variant("trl-sft", "TRL SFTTrainer (default, padding)", "trl", {"micro_batch": mb}),
            Variant("trl-padding-free", "TRL SFTTrainer padding_free=True", "trl",
                    {"micro_batch": mb, "padding_free": True}),
        ]
    return [
        Variant("tunescout", f"tunescout (default budget {default_budget} tok)", "tunescout", {"budget": None}),
        Variant("tunescout-budget-maxlen", f"tunescout (budget {spec.max_length} tok)", "tunescout",
                {"budget": spec.max_length}),
        Variant("hf-trainer", "HF Trainer + DataCollatorForSeq2Seq", "hf", {"micro_batch": spec.micro_batch}),
        Variant("hf-trainer-mb1", "HF Trainer, micro-batch 1 (no pad)", "hf", {"micro_batch": 1}),
        Variant("trl-sft", "TRL SFTTrainer (default, padding)", "trl", {"micro_batch": spec.micro_batch}),
        Variant("trl-padding-free", "TRL SFTTrainer padding_free=True", "trl",
                {"micro_batch": spec.micro_batch, "padding_free": True}),
        Variant("trl-packing", "TRL SFTTrainer packing=True (bfd)", "trl", {"micro_batch": 1, "packing": True}),
    ]


# ----------------------------------------------------------------------------------------------
# Data: generated chat rows whose token lengths are log-uniform between min and max tokens
# ----------------------------------------------------------------------------------------------

_SYLLABLES = [
    "ka", "lo", "mi", "ne", "ra", "to", "su", "vi", "pe", "da", "ghe", "an", "or", "el", "in", "us",
    "bri", "stra", "qua", "ton", "mar", "lin", "dor", "fel", "sen", "ric", "pa", "ho", "ju", "ze", "wy",
]
_COMMON = [
    "the", "a", "of", "and", "to", "in", "is", "that", "for", "it", "with", "as", "on", "was", "by", "this",
    "are", "be", "from", "at", "or", "have", "an", "which", "one", "you", "not", "but", "all", "they",
    "were", "we", "can", "there", "has", "been", "more", "when", "will", "would", "some", "time", "water",
    "number", "people", "work", "place", "year", "sound", "river", "light", "stone", "cloud", "market",
    "teacher",
]


def lexicon(seed: int, size: int = 3000) -> list[str]:
    """Common English words plus pseudo-words, so texts tokenize into a realistic mix of pieces."""
    rng = random.Random(seed)
    words = set(_COMMON)
    while len(words) < size:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4))))
    return sorted(words)


def sentence_text(rng: random.Random, words: list[str], n_words: int) -> str:
    """``n_words`` words cut into capitalised sentences of 5 to 18 words."""
    out: list[str] = []
    while len(out) < n_words:
        k = min(rng.randint(5, 18), n_words - len(out))
        chunk = [rng.choice(words) for _ in range(k)]
        chunk[0] = chunk[0].capitalize()
        out.extend(chunk[:-1] + [chunk[-1] + rng.choice(".!?,;:" if k > 1 else ".")])
    return " ".join(out)


def tokenizer_corpus(seed: int, n: int = 6000) -> list[str]:
    """Text to train the tiny model's BPE on: enough distinct words to fill a 2048-token vocabulary."""
    from tunescout.demo.tiny import generate_corpus

    rng = random.Random(seed)
    words = lexicon(seed)
    return list(generate_corpus(2000, seed)) + [sentence_text(rng, words, rng.randint(5, 40)) for _ in range(n)]


def make_rows(tokenizer: Any, n: int, spec: ModelSpec, seed: int) -> list[dict[str, Any]]:
    """``n`` system/user/assistant conversations with log-uniform token lengths for ``tokenizer``.

    Word counts are set from the tokenizer's measured tokens-per-word and the chat template's
    overhead, so lengths land near the target; the actual lengths are reported after tokenisation.
    Rows longer than ``max_length`` are truncated by every trainer alike.
    """
    rng = random.Random(seed)
    words = lexicon(seed)
    probe = sentence_text(rng, words, 3000)
    per_word = len(tokenizer(probe, add_special_tokens=False)["input_ids"]) / 3000
    system = "You are a helpful assistant."
    empty = [{"role": "system", "content": system}, {"role": "user", "content": ""},
             {"role": "assistant", "content": ""}]
    overhead = len(tokenizer(tokenizer.apply_chat_template(empty, tokenize=False),
                             add_special_tokens=False)["input_ids"])
    rows = []
    for _ in range(n):
        target = math.exp(rng.uniform(math.log(spec.min_tokens), math.log(spec.max_tokens)))
        content = max(2.0, target - overhead)
        share = rng.uniform(0.2, 0.7)  # prompt share of the content
        n_prompt = max(1, round(content * share / per_word))
        # A prompt past max_length would leave truncation no answer token to learn from (the row
        # would be dropped by every trainer); end it early enough for 32 answer tokens.
        n_prompt = min(n_prompt, max(1, int((spec.max_length - overhead - 32) / per_word)))
        n_answer = max(1, round(content * (1 - share) / per_word))
        rows.append({"messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": sentence_text(rng, words, n_prompt)},
            {"role": "assistant", "content": sentence_text(rng, words, n_answer)},
        ]})
    return rows


# ----------------------------------------------------------------------------------------------
# Parent: prepare each model once, run every trainer in its own process, print the table
# ----------------------------------------------------------------------------------------------


def prepare_model(spec: ModelSpec, work: Path, seed: int) -> Path:
    """Build the tiny Llama, or dequantize SmolLM2's GGUF once into a ``save_pretrained`` folder.

    Every trainer then loads the same folder the same way (and the 15 s GGUF dequantisation is
    paid once, not once per trainer).
    """
    if spec.name in ("tiny", "llama-1b"):
        from tunescout.demo.tiny import build_tiny_model

        shape = {**TINY_SHAPE, "hidden_size": spec.hidden, "intermediate_size": 4 * spec.hidden}
        tiny = build_tiny_model(work / "models" / f"tiny-h{spec.hidden}-l4-p{max(1024, spec.max_length)}",
                                corpus=tokenizer_corpus(seed), seed=seed, max_positions=max(1024, spec.max_length),
                                **shape)
        if spec.name == "tiny":
            return tiny
        from throughput_gpu import build_llama_1b  # the tiny model's tokenizer, a 1B Llama's shape

        return build_llama_1b(tiny, work / "models" / "llama-1b", seed, max_positions=max(4096, spec.max_length))
    folder = work / "models" / "smollm2-135m-instruct"
    if not (folder / "config.json").exists():
        import torch
        from transformers import AutoModelForCausalLM

        from tunescout.builtins import smollm2_gguf
        from tunescout.train.models import load_model, load_tokenizer

        gguf = str(smollm2_gguf())
        model = load_model(gguf, method="full", dtype=torch.float32, attn_implementation="sdpa").eval()
        # A GGUF-loaded model refuses save_pretrained; copy its dequantized weights into a plain one.
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa").eval()
        plain.load_state_dict(model.state_dict())
        ids = torch.arange(1, 65)[None]
        with torch.no_grad():
            diff = float((plain(input_ids=ids).logits - model(input_ids=ids).logits).abs().max())
        if diff > 1e-4:
            raise RuntimeError(f"converted SmolLM2 differs from the GGUF load (max logit diff {diff})")
        tmp = folder.with_name(folder.name + ".partial")
        plain.save_pretrained(tmp)
        load_tokenizer(gguf).save_pretrained(tmp)
        tmp.rename(folder)
        del model, plain
    return folder


def prepare_data(spec: ModelSpec, model_dir: Path, work: Path, seed: int) -> dict[str, Any]:
    """Write the rows, and the exact samples of each optimizer step as tunescout will see them.

    tunescout tokenizes the rows itself inside ``train()``; its step order is rebuilt here with the
    same functions and seed, and the peers get those token ids and labels in that order (with
    sequential sampling), so all trainers see identical samples in identical steps.
    """
    from tunescout.config import DataSource
    from tunescout.data.phases import build_schedule
    from tunescout.data.prepare import prepare_data as ts_prepare
    from tunescout.train.models import load_tokenizer

    tokenizer = load_tokenizer(str(model_dir))
    n_steps = spec.steps + 1
    rows = make_rows(tokenizer, n_steps * spec.batch_size, spec, seed)
    data_dir = work / "data" / spec.name
    data_dir.mkdir(parents=True, exist_ok=True)
    rows_path = data_dir / "rows.jsonl"
    rows_path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    data = ts_prepare([DataSource(str(rows_path))], tokenizer, max_length=spec.max_length, train_on="completion",
                      too_long="truncate", strategy="stacked", epochs=1.0, eval_fraction=0.0, seed=seed)
    if len(data.train) != len(rows):
        raise RuntimeError(f"{len(rows) - len(data.train)} rows dropped in tokenisation: {data.stats.summary()}")
    schedule = build_schedule(data.phases, spec.batch_size, seed, None, n_steps)
    ordered = [data.train[i] for batch in schedule for i in batch.indices]
    samples_path = data_dir / "samples.json"
    samples_path.write_text(json.dumps([{"input_ids": list(s.input_ids), "labels": list(s.labels)} for s in ordered]))
    lengths = sorted(len(s) for s in ordered)
    step_tokens = [sum(len(data.train[i]) for i in b.indices) for b in schedule]
    return {
        "rows": str(rows_path), "samples": str(samples_path), "n_samples": len(ordered),
        "tokens": sum(lengths), "loss_tokens": data.stats.loss_tokens, "truncated": data.stats.truncated,
        "length_min": lengths[0], "length_median": lengths[len(lengths) // 2], "length_max": lengths[-1],
        "length_mean": round(sum(lengths) / len(lengths), 1), "step_tokens": step_tokens,
        "timed_tokens": sum(step_tokens[1:]),
        # (tokens, loss tokens) of every sample of the timed steps: what their model FLOPs depend on
        "timed_samples": [[(len(data.train[i]), data.train[i].num_loss_tokens) for i in b.indices]
                          for b in schedule[1:]],
    }


def run_worker(job: dict[str, Any], work: Path, threads: int, timeout: float = WORKER_TIMEOUT_S) -> dict[str, Any]:
    """Run one trainer in a fresh Python process; a crash or timeout becomes an error row."""
    tag = f"{job['model']['name']}-{job['variant']['key']}"
    job_path = work / "jobs" / f"{tag}.json"
    result_path = work / "jobs" / f"{tag}.result.json"
    log_path = work / "jobs" / f"{tag}.log"
    job_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.unlink(missing_ok=True)
    job_path.write_text(json.dumps({**job, "result_path": str(result_path), "run_dir": str(work / "runs" / tag)}))
    t0 = time.perf_counter()
    with log_path.open("w") as log:
        try:
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--worker", str(job_path)], check=False,
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **ENV, **_thread_env(threads)},
                timeout=timeout, cwd=ROOT,
            )
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = None
    if result_path.exists():
        result = json.loads(result_path.read_text())
    else:
        tail = log_path.read_text().strip().splitlines()[-3:]
        why = "timed out" if rc is None else f"worker exited with {rc}"
        result = {"status": "error", "error": f"{why}: {' | '.join(tail)}"}
    result["process_s"] = round(time.perf_counter() - t0, 1)
    result["log"] = str(log_path)
    return result


def _thread_env(threads: int) -> dict[str, str]:
    """Pin the worker's math libraries to ``threads`` threads (torch reads these at start)."""
    return {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def _fmt_rate(x: float | None) -> str:
    return f"{x:,.0f}" if x else "-"


def format_table(model: str, info: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The printed table: throughput, both ratios against tunescout's default, padding, memory."""
    base = next((r for r in rows if r["key"] == "tunescout" and r.get("status") == "ok"), {})
    ref, ref_cpu = base.get("tokens_per_s"), base.get("tokens_per_cpu_s")
    spec = info["spec"]
    data = info["data"]
    lines = [
        (f"== {model}: {info['method_text']}, {info['params']} | effective batch {spec['batch_size']} samples x "
         f"{spec['steps']} timed steps (+1 warm-up) | max_length {spec['max_length']} | float32, sdpa, "
         f"{info['threads']} threads"),
        (f"   samples: {data['n_samples']} chats, {data['length_min']}-{data['length_max']} tokens "
         f"(median {data['length_median']}, mean {data['length_mean']}), {data['truncated']} truncated; "
         f"timed window holds {data['timed_tokens']:,} real tokens"),
        "",
        (f"{'trainer':<38} {'micro-batching':<34} {'tokens/s':>8} {'x tunescout':>11} {'tunescout/x':>11} "
         f"{'tok/CPU-s':>9} {'x ts (CPU)':>10} {'pad %':>6} {'peak RSS':>9} {'timed s':>7} {'CPU s':>6} "
         f"{'load':>5}"),
    ]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"{r['label']:<38} FAILED: {r.get('error', '?')}")
            continue
        tps = r["tokens_per_s"]
        vs = f"{tps / ref:.2f}x" if ref else "-"
        inv = f"{ref / tps:.2f}x" if ref else "-"
        cpu_vs = f"{r['tokens_per_cpu_s'] / ref_cpu:.2f}x" if ref_cpu else "-"
        lines.append(
            f"{r['label']:<38} {r['batching']:<34} {_fmt_rate(tps):>8} {vs:>11} {inv:>11} "
            f"{_fmt_rate(r['tokens_per_cpu_s']):>9} {cpu_vs:>10} {100 * r['padding_fraction']:>5.1f}% "
            f"{r['peak_rss_mb']:>6.0f} MB {r['timed_s']:>7.1f} {r['cpu_s']:>6.1f} {max(r['load_1min']):>5.1f}"
        )
    notes = [f"   note [{r['label'].strip()}]: {n}"
             for r in rows if r.get("status") == "ok" for n in r.get("notes", [])]
    legend = ("   tokens/s: real (non-padding) input tokens / wall seconds of the timed steps; x tunescout: "
              "tokens/s over tunescout's (default budget); tunescout/x: the inverse; tok/CPU-s and x ts (CPU): "
              "the same per second of process CPU time; pad %: share of padding in the tokens fed to the "
              "model; peak RSS: the trainer's own process (model load included); CPU s: process CPU time of "
              "the timed steps (about threads x timed s when the cores are not shared); load: highest "
              "1-minute load average seen at a step end")
    return "\n".join(lines + ["", legend] + notes)


def machine_info() -> dict[str, Any]:
    """Versions and load, written into the JSON next to the numbers."""
    from importlib.metadata import version

    out: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                           "cpus": os.cpu_count(), "affinity": sorted(os.sched_getaffinity(0)),
                           "load_avg": os.getloadavg()}
    for pkg in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "tunescout", "flash-attn",
                "liger-kernel"):
        try:
            out[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - a missing package is reported, not fatal
            out[pkg] = None
    try:
        git = partial(subprocess.run, check=False, capture_output=True, text=True, cwd=ROOT, timeout=5)
        # Results of earlier runs (benchmarks/results) and prose (*.md) are not code: they leave a run clean.
        dirty = git(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                     ":(exclude)benchmarks/results", ":(exclude)*.md"]).stdout.strip()
        out["git"] = git(["git", "rev-parse", "--short", "HEAD"]).stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=[*MODELS, "all"], default="all",
                        help="all: tiny and smollm2 on cpu, llama-1b on cuda")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: bf16 on the first GPU, with MFU and peak GPU memory (throughput_gpu.py)")
    parser.add_argument("--steps", type=int, help="timed optimizer steps (one warm-up step is added); "
                        "default 4 for tiny, 3 for smollm2, 8 for llama-1b")
    parser.add_argument("--batch-size", type=int, help="effective batch in samples per optimizer step; "
                        "default 16 for tiny, 8 for smollm2, 64 for llama-1b")
    parser.add_argument("--micro-batch", type=int, help="per_device_train_batch_size of the padded HF/TRL runs "
                        "(default 4, 8 for llama-1b; must divide the batch)")
    all_keys = list(dict.fromkeys(v.key for d in DEVICE_MODELS for v in variants(MODELS["tiny"], d)))
    parser.add_argument("--trainers", help="comma-separated subset of: " + ",".join(all_keys))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per trainer process (default 1: on a shared machine two threads "
                        "on two cores make step times swing by an order of magnitude whenever another "
                        "process runs; one thread keeps the comparison stable)")
    parser.add_argument("--max-length", type=int, help="max_length of every trainer (default 1024, 2048 for llama-1b)")
    parser.add_argument("--lengths", help="sample lengths log-uniform in LO-HI tokens (default 20-1000)")
    parser.add_argument("--hidden", type=int, help="width of the tiny model (default 256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker-timeout", type=float, default=WORKER_TIMEOUT_S,
                        help=f"seconds a trainer may take before its row is marked failed (default {WORKER_TIMEOUT_S})")
    parser.add_argument("--out", type=Path, help="JSON results (work files go in its folder); default "
                        "benchmarks/out/throughput.json, throughput-gpu.json with --device cuda")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker)

    os.environ.update(ENV)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    device = args.device
    attn = "sdpa"
    if device == "cuda":
        import importlib.util

        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA GPU is visible")
        # One attention kernel for every trainer: flash attention when installed, else SDPA.
        attn = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    args.out = args.out or OUT_DIR / ("throughput-gpu.json" if device == "cuda" else "throughput.json")
    work = args.out.resolve().parent
    work.mkdir(parents=True, exist_ok=True)
    names = DEVICE_MODELS[device] if args.model == "all" else [args.model]
    wanted = set(args.trainers.split(",")) if args.trainers else None
    unknown = (wanted or set()) - set(all_keys)
    if unknown:
        parser.error(f"unknown trainers: {', '.join(sorted(unknown))}")
    report: dict[str, Any] = {"machine": machine_info(), "device": device, "attn": attn, "models": {}}
    if device == "cuda":
        from throughput_gpu import format_gpu_table, gpu_info, timed_flops

        report["machine"].update(gpu_info())
    tables = []
    t_start = time.perf_counter()
    for name in names:
        spec = MODELS[name]
        lo, hi = (int(x) for x in args.lengths.split("-")) if args.lengths else (None, None)
        spec = replace(spec, **{k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size),
                                                   ("micro_batch", args.micro_batch), ("max_length", args.max_length),
                                                   ("min_tokens", lo), ("max_tokens", hi), ("hidden", args.hidden))
                                if v is not None})
        if spec.batch_size % spec.micro_batch:
            parser.error(f"--micro-batch {spec.micro_batch} must divide the batch size {spec.batch_size}")
        print(f"[{name}] preparing model and data ...", flush=True)
        model_dir = prepare_model(spec, work, args.seed)
        data = prepare_data(spec, model_dir, work, args.seed)
        if device == "cuda":
            data["timed_flops"] = timed_flops(model_dir, data["timed_samples"])
        rows = []
        for variant in variants(spec, device):
            if wanted and variant.key not in wanted:
                continue
            print(f"[{name}] {variant.label} ...", flush=True)
            job = {"model": asdict(spec), "model_dir": str(model_dir), "variant": asdict(variant),
                   "data": data, "seed": args.seed, "device": device, "attn": attn}
            result = run_worker(job, work, args.threads, args.worker_timeout)
            rows.append({"key": variant.key, "label": variant.label, **result})
            status = (f"{result['tokens_per_s']:,.0f} tok/s" if result.get("status") == "ok"
                      else f"FAILED: {result.get('error')}")
            print(f"[{name}]   -> {status} ({result['process_s']:.0f} s in all)", flush=True)
        meta = next((r for r in rows if r.get("status") == "ok"), {})
        info = {"spec": asdict(spec), "data": data, "threads": meta.get("threads", "?"),
                "params": meta.get("params_text", "?"),
                "method_text": "full fine-tuning" if spec.method == "full" else "LoRA r=16 on all linear layers"}
        report["models"][name] = {**info, "results": rows}
        if device == "cuda":
            tables.append(format_gpu_table(name, {**info, "attn": attn, "gpu": report["machine"]}, rows))
        else:
            tables.append(format_table(name, info, rows))
    report["machine"]["load_avg_after"] = os.getloadavg()
    report["total_s"] = round(time.perf_counter() - t_start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print()
    print("\n\n".join(tables))
    m = report["machine"]
    print(f"\nload average before {tuple(round(x, 2) for x in m['load_avg'])}, after "
          f"{tuple(round(x, 2) for x in m['load_avg_after'])}; total {report['total_s']:.0f} s; "
          f"results in {args.out}")
    return 0


# ----------------------------------------------------------------------------------------------
# Worker: one trainer, one process
# ----------------------------------------------------------------------------------------------


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _params_text(model: Any) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"{total / 1e6:.1f}M params ({trainable / 1e6:.2f}M trainable)"


def run_tunescout(job: dict[str, Any]) -> dict[str, Any]:
    """``train()`` on the rows file; the timed window is read back from ``telemetry.jsonl``."""
    import torch

    from tunescout.config import DataSource, TrainConfig
    from tunescout.train.loop import train
    from tunescout.train.telemetry import read_telemetry

    spec, opts, data = job["model"], job["variant"]["options"], job["data"]
    device = job.get("device", "cpu")
    extra = {"max_tokens_per_micro_batch": opts["budget"]} if opts.get("budget") else {}
    config = TrainConfig.of(
        model=job["model_dir"], method=spec["method"], data=[DataSource(data["rows"])],
        batch_size=spec["batch_size"], max_steps=spec["steps"] + 1, epochs=1.0, max_length=spec["max_length"],
        learning_rate=spec["learning_rate"], train_on="completion", eval_fraction=0.0,
        dtype="bfloat16" if device == "cuda" else "float32", attn_implementation=opts.get("attn", job.get("attn", "sdpa")),
        device=device, seed=job["seed"], output_dir=job["run_dir"], save_model=False, progress=False,
        checkpoint_every=None, compile=opts.get("compile", False), liger=opts.get("liger", False), **extra,
    )
    clock = _StepClock(sync=device == "cuda")
    t0 = time.perf_counter()
    result = train(config, sinks=[clock], restart=True)  # a rerun into the same --out starts over
    total_s = time.perf_counter() - t0
    if result.status != "completed":
        raise RuntimeError(f"tunescout run {result.status}: {result.reason}")
    steps = read_telemetry(Path(job["run_dir"]) / "telemetry.jsonl")
    tokens = steps[-1]["tokens"] - steps[0]["tokens"]
    budget = config.batch.max_tokens_per_micro_batch
    mbs = [s["micro_batches"] for s in steps[1:]]
    mfus = [s.get("mfu") for s in steps[1:]]
    padding = sum(s.get("pad_tokens", 0) for s in steps[1:])
    notes = []
    if tokens != data["timed_tokens"]:
        notes.append(f"timed tokens {tokens} differ from the prepared schedule's {data['timed_tokens']}")
    return {
        **clock.window(), "tokens": tokens, "padded_tokens": tokens + padding,
        "telemetry_s": steps[-1]["wall_s"] - steps[0]["wall_s"],
        "batching": f"cost-model plan in <= {budget} tok, {min(mbs)}-{max(mbs)} mb/step, {padding} pad tok",
        "telemetry_mfu": sum(mfus) / len(mfus) if mfus and None not in mfus else None,
        "micro_batches_per_step": mbs, "train_total_s": total_s, "final_loss": result.final_loss,
        "params_text": (f"{result.params['total'] / 1e6:.1f}M params "
                        f"({result.params['trainable'] / 1e6:.2f}M trainable)"),
        "threads": torch.get_num_threads(), "notes": notes,
        "timing": "sink called after each optimizer step: end of step N - end of step 1",
    }


def _hf_dataset(samples_path: str) -> Any:
    import datasets

    samples = json.loads(Path(samples_path).read_text())
    return datasets.Dataset.from_dict({"input_ids": [s["input_ids"] for s in samples],
                                       "labels": [s["labels"] for s in samples]})


def _hf_args(job: dict[str, Any], cls: Any, micro_batch: int, accumulation: int, **extra: Any) -> Any:
    """Training arguments shared by HF and TRL: same optimizer settings as tunescout, no logging,
    no saving, no eval, and sequential sampling so steps hold the samples tunescout's steps hold.

    TRL's ``SFTConfig`` defaults to gradient checkpointing and bf16; both are off here, as in
    tunescout and ``TrainingArguments``, so every trainer does the same arithmetic in float32. On a
    GPU all of them run bf16 autocast over float32 weights (``bf16=True``, tunescout's
    ``mixed_precision``)."""
    spec = job["model"]
    gpu = job.get("device", "cpu") == "cuda"
    return cls(
        output_dir=job["run_dir"], per_device_train_batch_size=micro_batch, gradient_accumulation_steps=accumulation,
        max_steps=spec["steps"] + 1, learning_rate=spec["learning_rate"], lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.95, adam_epsilon=1e-8, max_grad_norm=1.0,
        logging_strategy="no", save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
        use_cpu=not gpu, dataloader_num_workers=0, dataloader_pin_memory=gpu, train_sampling_strategy="sequential",
        seed=job["seed"], bf16=gpu, fp16=False, gradient_checkpointing=False, **extra,
    )


class _StepClock:
    """Wall and process CPU time at the end of every optimizer step (a tunescout sink, and the
    HF/TRL callback below). CPU time barely moves when other processes take the cores, wall time
    does: the two together show whether a number was disturbed. On a GPU (``sync``) it waits for
    the queued kernels first: an optimizer step returns before the GPU has done it."""

    def __init__(self, sync: bool = False) -> None:
        self.marks: list[tuple[float, float, float]] = []
        self.sync = sync

    def write(self, record: Any = None) -> None:
        if self.sync:
            import torch

            torch.cuda.synchronize()
        self.marks.append((time.perf_counter(), time.process_time(), os.getloadavg()[0]))

    def close(self) -> None:
        pass

    def window(self) -> dict[str, Any]:
        """Steps 2..N: the first step is the warm-up."""
        (w1, c1, _), (wn, cn, _) = self.marks[0], self.marks[-1]
        return {"timed_s": wn - w1, "cpu_s": cn - c1, "steps_timed": len(self.marks) - 1,
                "step_s": [round(b[0] - a[0], 3) for a, b in zip(self.marks, self.marks[1:])],
                "load_1min": [round(m[2], 2) for m in self.marks]}


class _Counter:
    """Real and padded tokens of every micro-batch that reaches ``training_step``."""

    def __init__(self) -> None:
        self.real = 0
        self.padded = 0

    def add(self, inputs: dict[str, Any]) -> None:
        ids = inputs["input_ids"]
        self.padded += int(ids.numel())
        mask = inputs.get("attention_mask")
        # Padding-free batches carry position ids and no mask: every token is real.
        self.real += int(mask.sum()) if mask is not None else int(ids.numel())


def _timed_train(trainer: Any, sync: bool = False) -> dict[str, Any]:
    """Run ``trainer.train()`` with a step clock and a token counter; return the timed window."""
    from transformers import TrainerCallback

    counter = _Counter()
    clock = _StepClock(sync)
    tokens: list[tuple[int, int]] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock.write()
            tokens.append((counter.real, counter.padded))

    original = trainer.training_step

    def counted(model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        counter.add(inputs)
        return original(model, inputs, *args, **kwargs)

    trainer.training_step = counted
    trainer.add_callback(StepClock())
    t0 = time.perf_counter()
    out = trainer.train()
    total_s = time.perf_counter() - t0
    (real1, pad1), (realn, padn) = tokens[0], tokens[-1]
    return {**clock.window(), "tokens": realn - real1, "padded_tokens": padn - pad1,
            "train_total_s": total_s, "final_loss": getattr(out, "training_loss", None),
            "timing": "callback: on_step_end(step N) - on_step_end(step 1)"}


def _lora_config() -> Any:
    from peft import LoraConfig

    # The same adapter tunescout's defaults build (tunescout.config.LoraConfig).
    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")


def run_hf(job: dict[str, Any]) -> dict[str, Any]:
    """``transformers.Trainer`` with the usual causal-LM SFT padding collator."""
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from tunescout.train.models import load_model, load_tokenizer

    spec, opts = job["model"], job["variant"]["options"]
    mb = opts["micro_batch"]
    ga = spec["batch_size"] // mb
    tokenizer = load_tokenizer(job["model_dir"])
    model = load_model(job["model_dir"], method=spec["method"], dtype=torch.float32,
                       attn_implementation=job.get("attn", "sdpa"))
    trainer = Trainer(
        model=model, args=_hf_args(job, TrainingArguments, mb, ga), train_dataset=_hf_dataset(job["data"]["samples"]),
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE),
        processing_class=tokenizer,
    )
    out = _timed_train(trainer, sync=job.get("device") == "cuda")
    return {**out, "batching": f"{mb} padded/micro-batch x GA {ga}", "params_text": _params_text(model),
            "threads": torch.get_num_threads(), "optim": trainer.args.optim, "notes": []}


def run_trl(job: dict[str, Any]) -> dict[str, Any]:
    """TRL ``SFTTrainer``: default padding collator, ``padding_free=True`` or ``packing=True``."""
    import torch
    from trl import SFTConfig, SFTTrainer

    from tunescout.train.models import load_model, load_tokenizer

    spec, opts, data = job["model"], job["variant"]["options"], job["data"]
    tokenizer = load_tokenizer(job["model_dir"])
    dataset = _hf_dataset(data["samples"])
    mb = opts["micro_batch"]
    notes = []
    extra: dict[str, Any] = {"max_length": spec["max_length"]}
    if opts.get("padding_free"):
        # TRL refuses max_length with padding_free and no packing (it would not be enforced); the
        # samples are already cut to max_length by tunescout's tokenisation, so nothing changes.
        extra = {"padding_free": True, "max_length": None}
        if max(len(ids) for ids in dataset["input_ids"]) > spec["max_length"]:
            raise RuntimeError("samples longer than max_length reached the padding-free run")
    if opts.get("packing"):
        from trl.data_utils import pack_dataset

        extra["packing"] = True
        extra["packing_strategy"] = "bfd"
        # A step holds packed rows, not samples: take as many rows per step as spread the same
        # samples over the same number of steps (so tokens per step match the other runs).
        n_rows = len(pack_dataset(dataset.select_columns(["input_ids", "labels"]), spec["max_length"], "bfd"))
        ga = max(1, round(n_rows / (spec["steps"] + 1)))
        notes.append(f"{len(dataset)} samples packed into {n_rows} rows of <= {spec['max_length']} tokens; a step "
                     f"is {ga} rows: samples per step differ from the other runs, tokens per step roughly match")
    else:
        ga = spec["batch_size"] // mb
    model = load_model(job["model_dir"], method="full", dtype=torch.float32,
                       attn_implementation=job.get("attn", "sdpa"))
    args = _hf_args(job, SFTConfig, mb, ga, completion_only_loss=True, dataset_num_proc=None, **extra)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=_lora_config() if spec["method"] == "lora" else None)
    out = _timed_train(trainer, sync=job.get("device") == "cuda")
    if opts.get("packing"):
        batching = f"{mb} packed row x GA {ga}"
    elif opts.get("padding_free"):
        batching = f"{mb} flattened/micro-batch x GA {ga}"
    else:
        batching = f"{mb} padded/micro-batch x GA {ga}"
    if not opts.get("packing") and out["tokens"] != data["timed_tokens"]:
        notes.append(f"timed tokens {out['tokens']} differ from the prepared schedule's {data['timed_tokens']}")
    return {**out, "batching": batching, "params_text": _params_text(trainer.model),
            "threads": torch.get_num_threads(), "optim": trainer.args.optim, "notes": notes}


def worker_main(job_path: Path) -> int:
    """Entry point of a worker process: run the job, write its result JSON (errors included)."""
    import logging
    import traceback
    import warnings

    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    job = json.loads(job_path.read_text())
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    kind = job["variant"]["kind"]
    runner = {"tunescout": run_tunescout, "hf": run_hf, "trl": run_trl}[kind]
    try:
        out = runner(job)
        out["tokens_per_s"] = out["tokens"] / out["timed_s"]
        out["tokens_per_cpu_s"] = out["tokens"] / out["cpu_s"]
        out["padding_fraction"] = 1 - out["tokens"] / max(1, out["padded_tokens"])
        if job.get("device") == "cuda":
            from tunescout.train.flops import peak_bf16_flops

            # Every row trains the same samples, so the same model FLOPs: MFU is tokens/s rescaled.
            peak = peak_bf16_flops("cuda")
            out["mfu"] = job["data"]["timed_flops"] / out["timed_s"] / peak if peak else None
        out["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row that says why
        traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        out = {"status": "error", "error": f"{type(exc).__name__}: {first}"[:300]}
    out["peak_rss_mb"] = _peak_rss_mb()
    if job.get("device") == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    Path(job["result_path"]).write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
