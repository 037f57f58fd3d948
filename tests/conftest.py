"""Shared fixtures: a tiny Llama built locally once per test session."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

# Tests never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")  # W&B tracker tests write local files only
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, hidden-64 Llama with a locally trained BPE tokenizer, saved with save_pretrained."""
    from tunescout.demo.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_bloom_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> Path:
    """A 2-layer Bloom (ALiBi: its mask ignores position ids, so it cannot be packed; no flex attention)."""
    import torch
    from transformers import BloomConfig, BloomForCausalLM

    config = BloomConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, n_layer=2, n_head=4,
                         hidden_dropout=0.0, attention_dropout=0.0,
                         bos_token_id=tiny_tokenizer.bos_token_id, eos_token_id=tiny_tokenizer.eos_token_id,
                         pad_token_id=tiny_tokenizer.pad_token_id)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("models") / "tiny-bloom"
    BloomForCausalLM(config).save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def load_script():
    """Import a script that is not a package module (``benchmarks/*.py``) by its path, under ``name``
    (registered in ``sys.modules``, as its dataclasses need)."""
    def load(path: Path, name: str):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    return load
