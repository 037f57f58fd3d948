"""Tiny Llama-architecture models with a locally trained tokenizer, for tests and the default run.

Nothing is downloaded: the tokenizer is a byte-level BPE trained with ``tokenizers`` on text we
generate, the model is a randomly initialised ``LlamaForCausalLM`` built from a config, and both
are saved with ``save_pretrained`` so they load back through the same ``from_pretrained`` path
users take with real checkpoints.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Iterator

from tunescout.data.tokenize import DEFAULT_CHAT_TEMPLATE

__all__ = ["CHATML_TEMPLATE", "build_tiny_model", "cache_dir", "generate_corpus"]

CHATML_TEMPLATE = DEFAULT_CHAT_TEMPLATE
"""The tiny tokenizer's chat template: ChatML, the one training falls back to."""
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_SUBJECTS = ["the cat", "a robot", "my friend", "the teacher", "our team", "the river", "a student", "the market"]
_VERBS = ["sees", "builds", "likes", "moves", "finds", "writes", "opens", "counts"]
_OBJECTS = ["a red box", "the old map", "seven apples", "a blue door", "the long road", "three books", "a small boat"]
_WORDS = ("alpha beta gamma delta apple river stone cloud light green blue red happy sad good bad "
          "yes no true false north south east west one two three four five six seven eight nine ten").split()


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/tunescout`` (default ``~/.cache/tunescout``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tunescout"


def generate_corpus(n: int = 2000, seed: int = 0) -> Iterator[str]:
    """Deterministic English-like lines, numbers and chat markup to train the tokenizer on."""
    rng = random.Random(seed)
    for i in range(n):
        kind = i % 4
        if kind == 0:
            yield f"{rng.choice(_SUBJECTS).capitalize()} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}."
        elif kind == 1:
            a, b = rng.randint(0, 99), rng.randint(0, 99)
            yield f"What is {a} plus {b}? The answer is {a + b}."
        elif kind == 2:
            yield " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12)))
        else:
            yield f"<|im_start|>user\nRepeat: {rng.choice(_WORDS)}<|im_end|>\n<|im_start|>assistant\n"


def build_tiny_model(
    out_dir: str | Path,
    *,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_positions: int = 1024,
    seed: int = 0,
    corpus: list[str] | None = None,
) -> Path:
    """Train a tokenizer, build a random tiny Llama, and ``save_pretrained`` both to ``out_dir``.

    Args:
        out_dir: folder to write (replaced if it exists).
        vocab_size: BPE vocabulary size, special tokens included.
        corpus: text to train the tokenizer on (defaults to :func:`generate_corpus`).

    Returns:
        ``out_dir`` as a Path, loadable with ``AutoModelForCausalLM``/``AutoTokenizer``.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out_dir)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(corpus if corpus is not None else list(generate_corpus(seed=seed)), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_positions, tie_word_embeddings=True, rms_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
