"""The demo's base model: a small Llama pretrained here, on CPU, on generated text.

A randomly initialised model cannot show anything a study is about: every configuration scores
zero. So the demo first makes a *base* model the way real ones are made, in miniature: a
tokenizer trained on the text, then a short language-model run with ``tunescout train`` (``text``
rows, loss on every token). It is cached, so only the first demo pays for it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable

from tunescout.config import DataSource, TrainConfig
from tunescout.demo.tasks import write_jsonl
from tunescout.demo.tiny import build_tiny_model, cache_dir

__all__ = ["BASE_NAME", "BUILD_SOURCES", "base_model_dir", "build_key", "ensure_demo_base"]

log = logging.getLogger(__name__)

BASE_NAME = "demo-base"
"""Cache folder prefix; the folder is ``demo-base-<build key>`` (:func:`build_key`)."""

ARCH = dict(vocab_size=1024, hidden_size=96, num_layers=3, num_heads=4, num_kv_heads=2, intermediate_size=256,
            max_positions=256)

PRETRAIN: dict[str, Any] = dict(
    method="full", train_on="all", batch_size=32, max_tokens_per_micro_batch=4096, max_length=128,
    learning_rate=6e-3, schedule="cosine", warmup_steps=10, epochs=6, weight_decay=0.0, grad_clip=1.0,
    checkpoint_every=50, eval_fraction=0.02)
"""The pretraining run's settings (see :func:`ensure_demo_base` for why these)."""

BUILD_SOURCES = ("data", "train", "demo/base.py", "demo/tiny.py", "demo/corpus.py", "demo/vocab.py")
"""The package's code that decides the base model's weights (tokenizer, corpus, packing, the
training step), relative to the package: a change to any of it gives a new cache key."""


def build_key(seed: int = 0) -> str:
    """A digest of everything that builds the base model: architecture, pretraining settings, the
    corpus, the code in :data:`BUILD_SOURCES` and the torch and transformers versions. A machine
    whose cache was built by other code trains a new base instead of running the demo on other
    weights than a fresh clone would (a version name bumped by hand missed such changes)."""
    import torch
    import transformers

    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(json.dumps({"arch": ARCH, "pretrain": PRETRAIN, "seed": seed, "torch": torch.__version__,
                                        "transformers": transformers.__version__}, sort_keys=True).encode())
    digest.update("\n".join(_corpus(seed)).encode())
    for entry in BUILD_SOURCES:
        target = package / entry
        for path in sorted(target.rglob("*.py") if target.is_dir() else [target]):
            digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def base_model_dir(seed: int = 0) -> Path:
    """The cache folder of the demo base model (the model itself is its ``model`` subfolder)."""
    return cache_dir() / f"{BASE_NAME}-{build_key(seed)}"


def _corpus(seed: int) -> list[str]:
    """Plain text, plus a quarter of it again as short ChatML exchanges.

    Real base models have seen chat markup before instruction tuning; without it the template's
    tokens keep random embeddings, and LoRA, which leaves embeddings frozen, cannot learn to
    close a turn. The exchanges hold no task: a paragraph's first sentence is the message and
    the rest is the reply, so where the paragraph refers back to its start (most of the corpus,
    see :func:`tunescout.demo.corpus.demo_pretraining_corpus`) the reply copies from the message,
    as an answer does later, and where it does not the reply is just the next sentence.
    """
    import random

    from tunescout.demo.corpus import demo_pretraining_corpus

    lines = demo_pretraining_corpus(8000, seed=seed)
    rng = random.Random(seed)
    pairs = [line.split(". ", 1) for line in lines[::4] if ". " in line]
    chats = [f"<|im_start|>user\n{first}.<|im_end|>\n<|im_start|>assistant\n{rest}<|im_end|>\n"
             for first, rest in pairs]
    corpus = lines + chats
    rng.shuffle(corpus)
    return corpus


def ensure_demo_base(seed: int = 0, say: Callable[[str], None] = log.info) -> Path:
    """Build (once) and return the pretrained demo base model folder.

    Steps: train a byte-level BPE tokenizer on the corpus and initialise the model
    (:func:`build_tiny_model`), then pretrain it for six epochs over the corpus with a cosine
    schedule. The finished model replaces the cache folder only when complete.

    Six epochs at 6e-3 (about a minute on two cores), because copying from the context, which
    the extraction and QA tasks need and a few dozen fine-tuning steps cannot create, appears
    late and suddenly. Probed on new paragraphs of the corpus's kinds, after four epochs at 3e-3
    (this corpus, with chat exchanges of unrelated lines) the model continued "Omar wrote down
    stamps tower mug. Priya read it back:" with other frequent words; after four at 6e-3 it
    copied half of such word lists but almost no cities or order numbers; after six it copies
    70% of the lists and nearly all cities and numbers.
    """
    final = base_model_dir(seed)
    if (final / "model" / "config.json").exists():
        return final / "model"
    work = final.with_name(final.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    corpus = _corpus(seed)
    say(f"building the demo base model: a tokenizer and a Llama of "
        f"{ARCH['num_layers']} layers x {ARCH['hidden_size']} on {len(corpus):,} generated lines")
    init = build_tiny_model(work / "init", corpus=corpus, seed=seed, **ARCH)
    data = write_jsonl([{"text": line} for line in corpus], work / "corpus.jsonl")

    from tunescout.train.loop import train

    config = TrainConfig.of(model=str(init), data=[DataSource(str(data))], output_dir=str(work / "pretrain"), seed=seed,
                         **PRETRAIN)
    result = train(config)
    if result.status != "completed":
        raise RuntimeError(f"demo base pretraining ended {result.status}: {result.reason}")
    say(f"base model pretrained: {result.tokens:,} tokens in {result.wall_s:.0f}s, "
        f"loss {result.final_loss:.2f}, validation loss {result.eval_loss:.2f}")
    (work / "pretrain" / "model").rename(work / "model")
    shutil.rmtree(final, ignore_errors=True)
    work.rename(final)
    for stale in final.parent.glob(f"{BASE_NAME}-*"):  # built by other code: never used again
        if stale != final and not stale.name.endswith(".partial"):
            shutil.rmtree(stale, ignore_errors=True)
    return final / "model"
