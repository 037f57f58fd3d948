"""Score a model on held-out rows: the rows become prompts and references, the model answers.

The prompt is built the way training renders the same row (see ``data/tokenize.py``), so an
evaluation asks the model exactly the question it was trained to answer: chats end at the
generation prompt before the last assistant turn; prompt/completion rows become a one-turn chat
when the tokenizer has a chat template, and stay a raw string when it has none.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, NamedTuple, Sequence

import torch

from tunescout.data.formats import DataError, Example
from tunescout.evaluate.generate import Prompt, generate_batched
from tunescout.evaluate.metrics import get_metric

__all__ = ["EvalItem", "build_eval_items", "evaluate_task"]

log = logging.getLogger(__name__)

KEEP_PREDICTIONS = 20
"""Predictions returned with a score: enough to eyeball, small enough for a results row."""


class EvalItem(NamedTuple):
    """One question for the model and the answer it is scored against."""

    prompt: Prompt
    reference: str


def _chat_item(ex: Example) -> EvalItem:
    if ex.completion_from is not None:  # TRL conversational: the prompt is given, the reference is its answer
        k = ex.completion_from
        answer = next((m["content"] for m in ex.messages[k:] if m["role"] == "assistant"), None)
        if answer is None:
            what = "a prompt-only row has no `completion`" if k == len(ex.messages) else "`completion` has no assistant message"
            raise DataError(f"{ex.where}: {what} to use as the reference answer")
        return EvalItem(list(ex.messages[:k]), answer)
    last = max((i for i, m in enumerate(ex.messages) if m["role"] == "assistant"), default=None)
    if last is None:
        raise DataError(f"{ex.where}: chat has no assistant turn to use as the reference answer")
    if last == 0:
        raise DataError(f"{ex.where}: chat opens with the assistant, so there is nothing to prompt with")
    return EvalItem(list(ex.messages[:last]), ex.messages[last]["content"])


def build_eval_items(examples: Sequence[Example], use_chat: bool) -> list[EvalItem]:
    """Turn normalised rows into (prompt, reference) pairs.

    Args:
        examples: rows from :func:`tunescout.data.formats.read_examples`.
        use_chat: render prompt/completion rows as a one-user-turn chat (pass whether the
            tokenizer has a chat template, as training does); otherwise the prompt is the raw string.

    Raises:
        DataError: a ``text`` row (nothing to answer), or a chat without a usable assistant turn;
            the message names the row.
    """
    items = []
    for ex in examples:
        if ex.kind == "messages":
            items.append(_chat_item(ex))
        elif ex.kind == "prompt_completion":
            prompt: Prompt = [{"role": "user", "content": ex.prompt}] if use_chat else ex.prompt
            items.append(EvalItem(prompt, ex.completion))
        else:
            raise DataError(f"{ex.where}: a `{ex.kind}` row has no prompt and answer, so it cannot be an "
                            "evaluation task (use `messages` or `prompt`/`completion` rows)")
    return items


def evaluate_task(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: Sequence[Example],
    metric: str,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    limit: int | None = None,
    generation: Mapping[str, Any] | None = None,
    per_row: bool = False,
) -> dict[str, Any]:
    """Generate an answer to every row greedily and score the answers with ``metric``.

    Args:
        model: a causal LM or ``PeftModel`` on ``device``; its train/eval mode is restored after.
        tokenizer: its tokenizer (with the chat template training used).
        examples: normalised rows holding prompts and reference answers.
        metric: a generation metric name from :data:`tunescout.evaluate.metrics.METRICS`.
        max_new_tokens: longest answer generated.
        batch_size: prompts per ``generate`` call.
        device: where the inputs go.
        limit: score only the first ``limit`` rows (the order is the caller's).
        generation: ``GenerationConfig`` settings over greedy decoding (see :func:`generate_batched`).
        per_row: also return every row's prompt, answer, reference and score under ``"rows"``.

    Returns:
        ``{"metric": name, "score": float in [0, 1], "n": rows scored, "predictions": first 20 answers}``,
        and with ``per_row``, ``"rows": [{"where", "prompt", "prediction", "reference", "score"}, ...]``.

    Raises:
        ValueError: unknown metric, a metric not computed from generations (``val_loss``), no rows,
            or a row that cannot be a task (``DataError``, naming the row).
    """
    spec = get_metric(metric)
    if spec.fn is None:
        raise ValueError(f"metric {metric!r} is not computed from generated text; the training loop reports it")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    rows = list(examples)[:limit]
    if not rows:
        raise ValueError("no examples to evaluate")
    items = build_eval_items(rows, use_chat=bool(getattr(tokenizer, "chat_template", None)))
    predictions = generate_batched(model, tokenizer, [item.prompt for item in items],
                                   max_new_tokens=max_new_tokens, batch_size=batch_size, device=device,
                                   generation=generation)
    score = spec.fn(predictions, [item.reference for item in items])
    log.info("%s = %.4f on %d examples", spec.name, score, len(items))
    out = {"metric": spec.name, "score": float(score), "n": len(items), "predictions": predictions[:KEEP_PREDICTIONS]}
    if per_row:  # each row scored alone: the metric is a mean of per-row scores, so these average to `score`
        out["rows"] = [{"where": row.where, "prompt": item.prompt if isinstance(item.prompt, str) else list(item.prompt),
                        "prediction": pred, "reference": item.reference, "score": float(spec.fn([pred], [item.reference]))}
                       for row, item, pred in zip(rows, items, predictions)]
    return out
