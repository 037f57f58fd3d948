"""The embedded default run: a tiny local model and generated data, trained on CPU in a minute."""

from __future__ import annotations

from pathlib import Path

from tunescout.config import DataSource, TrainConfig
from tunescout.demo.tasks import make_rows, write_jsonl
from tunescout.demo.tiny import build_tiny_model, cache_dir

__all__ = ["default_config", "ensure_tiny_model"]


def ensure_tiny_model(name: str = "tiny-llama") -> Path:
    """Build the tiny model once into the cache directory and reuse it afterwards."""
    path = cache_dir() / name
    if not (path / "config.json").exists():
        build_tiny_model(path)
    return path


def default_config(output_dir: str = "runs/default", method: str = "full") -> TrainConfig:
    """A full fine-tuning run on the tiny model over two generated tasks (knowledge-like, then skill-like)."""
    data_dir = cache_dir() / "default-data"
    knowledge = write_jsonl(make_rows("arithmetic", 256, seed=0), data_dir / "arithmetic.jsonl")
    skills = write_jsonl(make_rows("sentiment", 256, seed=0), data_dir / "sentiment.jsonl")
    return TrainConfig.of(
        model=str(ensure_tiny_model()),
        method=method,
        data=[DataSource(str(knowledge), phase=1), DataSource(str(skills), phase=2)],
        batch_size=32,
        max_tokens_per_micro_batch=1024,
        learning_rate=1e-3,
        epochs=2,
        max_length=128,
        eval_fraction=0.1,
        output_dir=output_dir,
        checkpoint_every=10,
    )
