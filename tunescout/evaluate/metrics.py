"""Task metrics over generated text, in pure Python, and the registry that names them.

Every generation metric has one signature, ``fn(predictions, references) -> float``: the mean
over examples of a per-example score in [0, 1]. A reference may be a list of acceptable answers;
the example then scores its best match, as in SQuAD. Implementations are our own (no
``evaluate``/``rouge_score`` dependency) so a score means the same thing on every machine and
the normalisation rules are written down here, next to the numbers they produce.

The registry also knows ``val_loss``: it is computed by the training loop, not from generated
text, so its :class:`Metric` has ``fn=None``; it is registered so that study code (ASHA,
ranking) can ask any metric name for its direction (``higher_is_better``) in one place.
"""

from __future__ import annotations

import difflib
import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

from tunescout.evaluate.harness import HARNESS_PREFIX, harness_direction

__all__ = [
    "METRICS", "Metric", "MetricFn", "accuracy", "exact_match", "f1", "get_metric", "normalize_answer",
    "normalize_label", "register_metric", "rouge_l",
]

Reference = str | Sequence[str]
MetricFn = Callable[[Sequence[str], Sequence[Reference]], float]


@dataclass(frozen=True)
class Metric:
    """A named metric and the direction in which it improves."""

    name: str
    fn: MetricFn | None
    """Scores generated text; ``None`` for metrics not computed from generations (``val_loss``)."""
    higher_is_better: bool = True

    @property
    def is_generation(self) -> bool:
        """Whether this metric scores generated text (and so can be used by ``evaluate_task``)."""
        return self.fn is not None


# --- normalisation ---

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _collapse(text: str) -> str:
    return " ".join(text.split())


def normalize_label(text: str) -> str:
    """Labels compare on their first line, stripped, lowercased, whitespace collapsed, trailing
    punctuation dropped: a model that answers ``"Positive.\\nBecause..."`` said ``positive``."""
    lines = text.strip().splitlines()
    first = lines[0] if lines else ""
    return _collapse(first.lower()).rstrip(string.punctuation + " ")


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lowercase, drop punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return _collapse(_ARTICLES.sub(" ", text))


# --- per-example scores ---

def _token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:  # SQuAD convention: two empty answers agree, one empty one scores 0
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Longest common subsequence by dynamic programming, one row at a time (O(len(b)) memory)."""
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal = 0  # row[j - 1] of the previous row
        for j, y in enumerate(b, start=1):
            diagonal, row[j] = row[j], (diagonal + 1 if x == y else max(row[j], row[j - 1]))
    return row[-1]


def _rouge_l(prediction: str, reference: str) -> float:
    pred, ref = prediction.lower().split(), reference.lower().split()
    if not pred or not ref:
        return float(pred == ref)
    lcs = _lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def _mean_best(
    score: Callable[[str, str], float], predictions: Sequence[str], references: Sequence[Reference]
) -> float:
    """Mean over examples of the best score against any of the example's references."""
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("predictions and references must be lists (one entry per example), not a string")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no examples to score")
    total = 0.0
    for i, (prediction, refs) in enumerate(zip(predictions, references)):
        options = [refs] if isinstance(refs, str) else list(refs)
        if not options:
            raise ValueError(f"example {i} has an empty list of references")
        total += max(score(prediction, ref) for ref in options)
    return total / len(predictions)


# --- the metrics ---

def accuracy(predictions: Sequence[str], references: Sequence[Reference]) -> float:
    """Fraction of predictions whose first line equals a reference label (see :func:`normalize_label`).

    Meant for classification tasks whose answer is one label; unlike ``exact_match`` it keeps
    articles and inner punctuation, which can be part of a label.
    """
    return _mean_best(lambda p, r: float(normalize_label(p) == normalize_label(r)), predictions, references)


def exact_match(predictions: Sequence[str], references: Sequence[Reference]) -> float:
    """Fraction of predictions equal to a reference after SQuAD normalisation (:func:`normalize_answer`)."""
    return _mean_best(lambda p, r: float(normalize_answer(p) == normalize_answer(r)), predictions, references)


def f1(predictions: Sequence[str], references: Sequence[Reference]) -> float:
    """Mean SQuAD token F1 (bag of normalised tokens), best over each example's references."""
    return _mean_best(_token_f1, predictions, references)


def rouge_l(predictions: Sequence[str], references: Sequence[Reference]) -> float:
    """Mean ROUGE-L F-measure (beta 1) on lowercased whitespace tokens, best over references.

    Tokens are split on whitespace only, so punctuation stays attached (``mat.`` is not ``mat``):
    a stricter, simpler rule than ``rouge_score``'s, chosen so the number is easy to check by hand.
    """
    return _mean_best(_rouge_l, predictions, references)


# --- the registry ---

METRICS: dict[str, Metric] = {}
"""Every known metric by name. Add to it with :func:`register_metric`."""


def register_metric(metric: Metric, *, replace: bool = False) -> Metric:
    """Add ``metric`` to :data:`METRICS`, checked so a typo cannot shadow a built-in silently.

    Raises:
        ValueError: the name is taken (and ``replace`` is false) or not an identifier-like name.
    """
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", metric.name):
        raise ValueError(f"metric name {metric.name!r} must start with a letter and use letters, digits, _")
    if metric.name in METRICS and not replace:
        raise ValueError(f"metric {metric.name!r} is already registered (pass replace=True to override)")
    if metric.fn is not None and not callable(metric.fn):
        raise ValueError(f"metric {metric.name!r}: fn must be callable or None")
    METRICS[metric.name] = metric
    return metric


def get_metric(name: str) -> Metric:
    """The registered metric called ``name``.

    A ``harness:<tasks>:<key>`` name (a study dataset scored by lm-eval harness tasks) is known
    too, with the direction of its key.

    Raises:
        ValueError: unknown name; the message lists the known ones and the closest match.
    """
    try:
        return METRICS[name]
    except KeyError:
        pass
    if name.startswith(HARNESS_PREFIX):  # scored by lm-eval (evaluate/harness.py), not from generations here
        return Metric(name, None, higher_is_better=harness_direction(name.rsplit(":", 1)[-1]))
    known = sorted(METRICS)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown metric {name!r}{hint} (known: {', '.join(known)})")


for _metric in (
    Metric("accuracy", accuracy),
    Metric("exact_match", exact_match),
    Metric("f1", f1),
    Metric("rougeL", rouge_l),
    Metric("val_loss", None, higher_is_better=False),
):
    register_metric(_metric)
