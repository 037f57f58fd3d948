"""Evaluation inside a trial and for ``tunescout eval``: batched generation, task metrics,
validation loss and the lm-evaluation-harness bridge.

Names are imported on first use (PEP 562): ``metrics`` and ``harness`` are pure Python, and the
study and analysis layers read metric names and directions from them without importing torch,
which only ``generate``, ``tasks`` and ``run`` need.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "generate": ["Prompt", "generate_batched", "render_prompt", "stop_token_ids"],
    "metrics": ["METRICS", "Metric", "MetricFn", "accuracy", "exact_match", "f1", "get_metric", "normalize_answer",
                "normalize_label", "register_metric", "rouge_l"],
    "tasks": ["EvalItem", "build_eval_items", "evaluate_task"],
    "harness": ["HarnessMetric", "harness_score", "parse_harness_metric", "run_harness"],
    "run": ["EvalArgs", "evaluate_model", "format_eval"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'tunescout.evaluate' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"tunescout.evaluate.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
