"""The lm-evaluation-harness bridge: harness tasks scored on the model already in memory.

The harness normally loads a model from a path itself; we hand its ``HFLM`` wrapper the model
object and tokenizer instead, so what it scores is exactly what was trained (a LoRA adapter on
its base included) and nothing is reloaded from disk or the hub. ``lm_eval`` is imported only
here, when a harness task is asked for, and a missing install fails with the ``pip`` hint.

A study dataset may name harness tasks as its metric (``metric: {harness: [arc_easy], key:
acc}``); :class:`HarnessMetric` is that mapping, parsed and checked once, and its
:attr:`~HarnessMetric.name` (``harness:arc_easy:acc``) is the metric name the store, the stopping
rules and the ranking use. This module's top level imports only the standard library, so study
code can parse a spec without importing torch.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tunescout.config import ConfigError
from tunescout.settings import did_you_mean

__all__ = ["HARNESS_INSTALL", "HARNESS_PREFIX", "HarnessMetric", "harness_available", "harness_direction",
           "harness_score", "parse_harness_metric", "require_harness", "run_harness"]

log = logging.getLogger(__name__)

HARNESS_INSTALL = "pip install 'tunescout[eval]'"
HARNESS_PREFIX = "harness:"
"""Metric names of harness scores start with this: ``harness:<task>[+<task>...]:<key>``."""
HARNESS_KEYS = ("harness", "key", "num_fewshot", "limit", "include_path", "batch_size")

LOWER_IS_BETTER = ("perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte", "ter")
"""Harness metrics that improve downwards; every other one (acc, acc_norm, exact_match, f1,
bleu, ...) improves upwards."""

_TASK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


def harness_available() -> bool:
    """Whether ``lm_eval`` is installed (checked without importing it)."""
    return importlib.util.find_spec("lm_eval") is not None


def require_harness() -> None:
    """Fail now, with the install hint, when lm-eval is missing (before a model is loaded for it)."""
    if not harness_available():
        raise ImportError(f"harness tasks need lm-evaluation-harness: {HARNESS_INSTALL}")


def harness_direction(key: str) -> bool:
    """``higher_is_better`` of a harness metric key (``acc``, ``exact_match,strict-match``, ``word_perplexity``)."""
    return key.split(",", 1)[0] not in LOWER_IS_BETTER


@dataclass(frozen=True)
class HarnessMetric:
    """Harness tasks scored as one number: the mean over ``tasks`` of each task's ``key``."""

    tasks: tuple[str, ...]
    """Harness task names (built-in, or defined by a YAML under ``include_path``)."""
    key: str = "acc"
    """The harness metric to read from each task's results: ``acc``, ``acc_norm``, or with the
    filter spelled out, ``exact_match,strict-match`` (without one, the task's first filter)."""
    num_fewshot: int | None = None
    """Few-shot examples in each prompt (``None``: each task's own default)."""
    limit: int | None = None
    """Score at most this many documents per task (``None``: in a study, the dataset's ``eval_limit``)."""
    include_path: str | None = None
    """A folder of task YAMLs to add to the harness's own (local tasks over local files)."""
    batch_size: int = 8
    """Requests per forward pass."""

    @property
    def name(self) -> str:
        """The metric's name where scores are stored: ``harness:arc_easy+gsm8k:acc``."""
        return f"{HARNESS_PREFIX}{'+'.join(self.tasks)}:{self.key}"

    @property
    def higher_is_better(self) -> bool:
        return harness_direction(self.key)


def parse_harness_metric(raw: Mapping[str, Any], where: str = "metric") -> HarnessMetric:
    """Check a dataset's ``metric: {harness: [...], key: ...}`` mapping and build it.

    Raises:
        ConfigError: an unknown key, no task, a task name that cannot be one, or a bad number;
            the message names ``where``.
    """
    for k in raw:
        if k not in HARNESS_KEYS:
            raise ConfigError(f"{where}: unknown key `{k}`{did_you_mean(str(k), HARNESS_KEYS)}")
    tasks = raw.get("harness")
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) and _TASK.fullmatch(t) for t in tasks):
        raise ConfigError(f"{where}: `harness` must be a non-empty list of task names (like [arc_easy]), got {tasks!r}")
    key = raw.get("key", "acc")
    if not isinstance(key, str) or not key:
        raise ConfigError(f"{where}: `key` must be a harness metric name such as acc, got {key!r}")
    numbers: dict[str, int | None] = {}
    for name, low in (("num_fewshot", 0), ("limit", 1), ("batch_size", 1)):
        value = raw.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ConfigError(f"{where}: `{name}` must be an integer >= {low}, got {value!r}")
        numbers[name] = value
    include = raw.get("include_path")
    if include is not None and not isinstance(include, str):
        raise ConfigError(f"{where}: `include_path` must be a folder path, got {include!r}")
    return HarnessMetric(tuple(tasks), key, numbers["num_fewshot"], numbers["limit"], include,
                         numbers["batch_size"] or 8)


def _task_scores(results: Mapping[str, Any]) -> dict[str, float]:
    """One task's harness results (``{"acc,none": 0.5, "acc_stderr,none": ..., "alias": ...}``)
    as ``{"acc": 0.5}``: the ``none`` filter dropped from the name, others kept (``exact_match,flexible-extract``),
    standard errors and non-numbers left out."""
    out: dict[str, float] = {}
    for name, value in results.items():
        if "," not in name or "_stderr" in name or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        metric, filt = name.split(",", 1)
        out[metric if filt == "none" else name] = float(value)
    return out


def _pick(scores: Mapping[str, float], key: str, task: str) -> float:
    if key in scores:
        return scores[key]
    filtered = [name for name in scores if name.split(",", 1)[0] == key]
    if filtered:
        return scores[filtered[0]]
    raise ValueError(f"harness task {task!r} reported no {key!r}; it reported: {', '.join(sorted(scores)) or 'nothing'}")


def run_harness(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[str],
    *,
    num_fewshot: int | None = None,
    limit: int | None = None,
    include_path: str | None = None,
    batch_size: int = 8,
    samples: bool = False,
) -> dict[str, Any]:
    """Run harness ``tasks`` on ``model`` as it is in memory.

    Args:
        model: a causal LM or ``PeftModel`` (its train/eval mode is restored after).
        tokenizer: its tokenizer.
        tasks: harness task names.
        num_fewshot: few-shot examples per prompt (``None``: each task's default).
        limit: at most this many documents per task.
        include_path: a folder of extra task YAMLs (e.g. a local task over a local JSON file).
        batch_size: requests per forward pass.
        samples: also return the harness's per-document records (arguments and log-likelihoods).

    Returns:
        ``{"scores": {task: {metric: value}}, "n": {task: documents}, "versions": {task: version},
        "samples": {task: [...]}`` (the last only with ``samples``).

    Raises:
        ImportError: lm-eval is not installed (with the install hint).
        ValueError: a task the harness does not know (the message lists what it was asked).
    """
    require_harness()
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    for name in ("lm-eval", "lm_eval"):  # the harness logs every request batch at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    # ... and warns that a model object (what we pass on purpose) ignores its loading options
    logging.getLogger("lm_eval.models.huggingface").setLevel(logging.ERROR)
    manager = TaskManager(include_path=include_path, include_defaults=False) if include_path else None
    if manager is None or any(t not in manager.all_tasks for t in tasks):
        # indexing the harness's own thousands of task YAMLs takes seconds: only when needed
        manager = TaskManager(include_path=include_path)
    missing = [t for t in tasks if t not in manager.all_tasks]
    if missing:
        where = f" (built-in, or under --include-path {include_path})" if include_path else ""
        raise ValueError(f"unknown harness task(s) {missing}{where}; `lm-eval ls tasks` lists the built-in ones")
    modes = {module: module.training for module in model.modules()}
    use_cache = getattr(getattr(model, "config", None), "use_cache", None)
    try:
        # HFLM takes the object as is: no reload, the adapter stays attached.
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        out = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit,
                                      task_manager=manager, log_samples=samples, bootstrap_iters=0)
    finally:
        for module, training in modes.items():
            module.train(training)
        if use_cache is not None:
            model.config.use_cache = use_cache
    results = out["results"]
    doc = {
        "scores": {t: _task_scores(results.get(t, {})) for t in tasks},
        "n": {t: int(out.get("n-samples", {}).get(t, {}).get("effective", 0)) for t in tasks},
        "versions": {t: out.get("versions", {}).get(t) for t in tasks},
    }
    if samples:
        doc["samples"] = {t: out.get("samples", {}).get(t, []) for t in tasks}
    return doc


def harness_score(doc: Mapping[str, Any], metric: HarnessMetric) -> float:
    """The one number ``metric`` names from a :func:`run_harness` result: the mean of its key over its tasks."""
    values = [_pick(doc["scores"][t], metric.key, t) for t in metric.tasks]
    return sum(values) / len(values)

