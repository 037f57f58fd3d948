"""Evaluate one trained model: task metric by generation, validation loss, harness tasks.

What ``tunescout eval`` does, as a library function. The pieces are the ones a trial uses
(:func:`~tunescout.evaluate.tasks.evaluate_task`, the training loop's
:func:`~tunescout.train.loss.evaluate_loss` over samples tokenised as training tokenises them,
:func:`~tunescout.evaluate.harness.run_harness`) on a model loaded once by
:func:`~tunescout.train.models.load_pretrained`, so a score here means what the same score means
in a study. Everything that can be checked without the model (metric name, data rows, the
harness install) is checked before the model is loaded.

A run directory is scored as its run measured itself: rows tokenised with the run's own
``max_length``, ``train_on``, ``too_long`` and ``chat_template`` (its ``config.yaml``), and,
with ``dtype: auto`` on the device type it trained on, the numerics it trained with (its
``run.json``'s resolved ``dtype``: a full fine-tune's float32 master weights under autocast, an
adapter's weights in the compute dtype). On the run's own eval file the validation loss then
equals the ``eval_loss`` in its ``result.json``. Settings given here (``max_length``, ``dtype``)
win over the run's.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from tunescout.data.formats import read_examples
from tunescout.data.packing import plan_micro_batches
from tunescout.data.tokenize import ensure_chat_template, tokenize_examples
from tunescout.evaluate.harness import require_harness, run_harness
from tunescout.evaluate.metrics import get_metric
from tunescout.evaluate.tasks import build_eval_items, evaluate_task
from tunescout.train.loss import evaluate_loss
from tunescout.train.models import load_pretrained, resolve_device, resolve_dtype

__all__ = ["EvalArgs", "evaluate_model", "format_eval"]

log = logging.getLogger(__name__)


@dataclass
class EvalArgs:
    """Settings of one evaluation (the ``config`` block of its JSON)."""

    data: str | None = None
    """Held-out rows (``messages`` or ``prompt``/``completion``), for the task metric and validation loss."""
    metric: str | None = None
    """Generation metric scored on ``data``: accuracy, exact_match, f1 or rougeL."""
    limit: int | None = None
    """Use the first N rows of ``data``, and at most N documents of each harness task."""
    max_new_tokens: int = 32
    batch_size: int = 16
    """Prompts per ``generate`` call (and harness requests per forward pass)."""
    generation: dict[str, Any] = field(default_factory=dict)
    """``GenerationConfig`` settings over greedy decoding (``{"do_sample": true, "temperature": 0.7}``)."""
    max_length: int | None = None
    """Validation-loss rows are tokenised as training does and truncated to this many tokens
    (unset: a run directory's own ``max_length``, else 2048)."""
    tasks: list[str] = field(default_factory=list)
    """lm-evaluation-harness tasks to run on the same model."""
    num_fewshot: int | None = None
    include_path: str | None = None
    """A folder of extra harness task YAMLs."""
    base: str | None = None
    """The base model of an adapter, instead of the one it records."""
    trust_remote_code: bool = False
    """Let a model or tokenizer that ships its own Python code run it (``--trust-remote-code``);
    off, such a model is refused with an error saying so, and nothing is asked on stdin."""
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    """Seeds torch before generating (matters only when ``generation`` samples)."""

    def __post_init__(self) -> None:
        if self.metric is not None and self.data is None:
            raise ValueError(f"--metric {self.metric} needs --data, the rows to score it on")
        if self.data is None and not self.tasks:
            raise ValueError("nothing to evaluate: give --data (task metric and validation loss) and/or --tasks")
        if self.metric is not None:
            if not get_metric(self.metric).is_generation:  # unknown names raise with a did-you-mean
                raise ValueError(f"--metric {self.metric} is not scored from generated text; "
                                 "the validation loss is always reported with --data")
        for name in ("limit", "max_new_tokens", "batch_size", "max_length"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise ValueError(f"--num-fewshot must be >= 0, got {self.num_fewshot}")


def _read_rows(args: EvalArgs) -> list:
    """The rows to score, checked now: a row that cannot be a task fails before the model loads."""
    rows = read_examples(args.data)[: args.limit]
    if args.metric is not None:
        build_eval_items(rows, use_chat=False)  # raises DataError naming file:line
    return rows


DEFAULT_MAX_LENGTH = 2048


def _read_mapping(file: Path, parse: Any, errors: tuple[type[Exception], ...]) -> dict[str, Any]:
    """A run directory's record as a mapping; a damaged one is an error naming it, not a traceback."""
    try:
        data = parse(file.read_text(encoding="utf-8")) or {}
    except (UnicodeDecodeError, *errors) as exc:
        raise _unreadable(file, f"{type(exc).__name__}: {str(exc).strip().partition(chr(10))[0]}") from None
    if not isinstance(data, dict):
        raise _unreadable(file, "not a mapping")
    return data


def _unreadable(file: Path, why: str) -> ValueError:
    return ValueError(f"{file}: unreadable run record ({why}); is this a tunescout run directory?")


@dataclass(frozen=True)
class _RunSettings:
    """What a run directory trained with, as far as scoring it again depends on it."""

    max_length: int = DEFAULT_MAX_LENGTH
    train_on: str = "completion"
    too_long: str = "truncate"
    chat_template: str | None = None
    method: str = "full"
    mixed_precision: bool = True
    device: str | None = None
    """The device type and compute dtype ``auto`` resolved to (``run.json``), when recorded."""
    dtype: str | None = None

    @classmethod
    def of(cls, model_path: str) -> _RunSettings:
        """A run directory's settings (its ``config.yaml`` and ``run.json``); the defaults for anything else."""
        folder = Path(model_path)
        if not (folder / "config.yaml").is_file() or (folder / "config.json").exists():
            return cls()
        config = _read_mapping(folder / "config.yaml", yaml.safe_load, (yaml.YAMLError,))
        resolved = {}
        if (folder / "run.json").is_file():
            resolved = _read_mapping(folder / "run.json", json.loads, (ValueError,)).get("resolved") or {}
            if not isinstance(resolved, dict):
                raise _unreadable(folder / "run.json", "`resolved` is not a mapping")
        defaults = cls()
        return cls(**{k: config.get(k, getattr(defaults, k)) for k in
                      ("max_length", "train_on", "too_long", "chat_template", "method", "mixed_precision")},
                   device=resolved.get("device"), dtype=resolved.get("dtype"))

    def numerics(self, args: EvalArgs, device: torch.device) -> tuple[torch.dtype, torch.dtype | None]:
        """(weights dtype, autocast dtype or None): the run's when ``dtype`` is ``auto`` on its device type."""
        if args.dtype != "auto" or self.dtype is None or self.device != device.type:
            return resolve_dtype(args.dtype, device), None
        compute = getattr(torch, self.dtype)
        if compute == torch.float32:
            return compute, None
        # As the training loop: float32 master weights for a full fine-tune, compute under autocast.
        full = self.mixed_precision and self.method == "full"
        return (torch.float32 if full else compute), compute


def _validation_loss(model: Any, tokenizer: Any, rows: list, run: _RunSettings, max_length: int, device: Any,
                     autocast: torch.dtype | None) -> tuple[float | None, int]:
    """Mean loss over the loss tokens of ``rows``, as the training loop's validation loss."""
    samples = tokenize_examples(rows, tokenizer, max_length, train_on=run.train_on, too_long=run.too_long)
    if not samples:
        return None, 0
    batches = plan_micro_batches(samples, max(max_length, 1024), max_length, tokenizer.pad_token_id or 0)
    return evaluate_loss(model, batches, device, autocast), len(samples)


def evaluate_model(model_path: str, args: EvalArgs, predictions: str | Path | None = None) -> dict[str, Any]:
    """Score ``model_path`` as ``args`` say.

    Args:
        model_path: a ``save_pretrained`` folder, PEFT adapter, run directory, ``.gguf`` file,
            ``builtin:`` name or hub id (see :func:`~tunescout.train.models.load_pretrained`).
        args: what to score.
        predictions: write one JSON line per scored row here (prompt, prediction, reference, score).

    Returns:
        ``{"model", "n", "metrics": {metric: value, "val_loss": value}, "harness": {task: {key: value}},
        "config": {...}, "loaded": {...}}`` (``harness`` only with tasks).

    Raises:
        ValueError: bad arguments, a folder that is not a model, unknown harness tasks, a model
            that would run code (its own without ``trust_remote_code``, or pickled weights), a
            ``.gguf`` file that is not a complete one, an adapter whose base model is missing.
        DataError: a data row that has no reference answer (file and line named).
        ImportError: harness tasks without lm-eval installed (with the install hint).
    """
    rows = _read_rows(args) if args.data else []
    if args.tasks:
        require_harness()
    if predictions is not None and args.metric is None:
        raise ValueError("--predictions needs --metric: predictions are the generated answers it scores")
    run = _RunSettings.of(model_path)
    max_length = args.max_length or run.max_length
    device = resolve_device(args.device)
    dtype, autocast = run.numerics(args, device)
    model, tokenizer, loaded = load_pretrained(model_path, base=args.base, dtype=dtype, device=device,
                                               trust_remote_code=args.trust_remote_code)
    if run.chat_template or any(ex.kind == "messages" for ex in rows):
        ensure_chat_template(tokenizer, run.chat_template)  # as training does for chat rows
    metrics: dict[str, float | None] = {}
    doc: dict[str, Any] = {"model": model_path, "n": len(rows), "metrics": metrics}
    if rows:
        if args.metric is not None:
            torch.manual_seed(args.seed)
            out = evaluate_task(model, tokenizer, rows, args.metric, max_new_tokens=args.max_new_tokens,
                                batch_size=args.batch_size, device=device, generation=args.generation or None,
                                per_row=predictions is not None)
            metrics[args.metric] = out["score"]
            if predictions is not None:
                Path(predictions).write_text("".join(json.dumps(r) + "\n" for r in out["rows"]))
        metrics["val_loss"], doc["val_loss_rows"] = _validation_loss(model, tokenizer, rows, run, max_length, device,
                                                                     autocast)
        doc["tokenized"] = {"max_length": max_length, "train_on": run.train_on, "too_long": run.too_long,
                            "chat_template": run.chat_template}
    if args.tasks:
        result = run_harness(model, tokenizer, args.tasks, num_fewshot=args.num_fewshot, limit=args.limit,
                             include_path=args.include_path, batch_size=args.batch_size)
        doc["harness"] = result["scores"]
        doc["harness_n"] = result["n"]
    doc["config"] = {**asdict(args), "max_length": max_length}
    doc["loaded"] = {**loaded, "device": device.type, "dtype": str(dtype).removeprefix("torch."),
                     **({"autocast": str(autocast).removeprefix("torch.")} if autocast else {})}
    return doc


def _fmt(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.4f}"


def format_eval(doc: dict[str, Any]) -> str:
    """The evaluation as a small table: one line per score."""
    lines = [f"model: {doc['model']}" + (f"  ({doc['n']} rows of {doc['config']['data']})" if doc.get("n") else "")]
    entries = [(name, value) for name, value in doc["metrics"].items()]
    for task, scores in doc.get("harness", {}).items():
        entries += [(f"{task} {key}", value) for key, value in scores.items()]
    width = max([len(name) for name, _ in entries] + [6])
    lines.append(f"{'metric':<{width}}  value")
    lines += [f"{name:<{width}}  {_fmt(value)}" for name, value in entries]
    return "\n".join(lines)

