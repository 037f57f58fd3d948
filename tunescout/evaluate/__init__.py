"""Evaluation inside a trial (and for ``tunescout eval``): batched greedy generation and task metrics."""

from tunescout.evaluate.generate import Prompt, generate_batched, render_prompt, stop_token_ids
from tunescout.evaluate.metrics import (
    METRICS,
    Metric,
    MetricFn,
    accuracy,
    exact_match,
    f1,
    get_metric,
    normalize_answer,
    normalize_label,
    register_metric,
    rouge_l,
)
from tunescout.evaluate.tasks import EvalItem, build_eval_items, evaluate_task

__all__ = [
    "METRICS", "EvalItem", "Metric", "MetricFn", "Prompt", "accuracy", "build_eval_items", "evaluate_task",
    "exact_match", "f1", "generate_batched", "get_metric", "normalize_answer", "normalize_label",
    "register_metric", "render_prompt", "rouge_l", "stop_token_ids",
]
