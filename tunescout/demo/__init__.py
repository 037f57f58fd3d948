"""The embedded default: tiny local models and generated data (nothing is downloaded)."""

from tunescout.demo.default import default_config, ensure_tiny_model
from tunescout.demo.tasks import TASKS, make_rows, write_jsonl
from tunescout.demo.tiny import build_tiny_model, cache_dir

__all__ = ["TASKS", "build_tiny_model", "cache_dir", "default_config", "ensure_tiny_model", "make_rows", "write_jsonl"]
