"""From data sources to tokenized train/eval samples and the phases that order them."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any, Sequence

from tunescout.config import DataSource, TrainConfig
from tunescout.data.formats import DataError, read_examples
from tunescout.data.phases import Phase
from tunescout.data.tokenize import TokenizedSample, TokenizeStats, ensure_chat_template, tokenize_examples

__all__ = ["PreparedData", "data_key", "prepare_data", "prepare_for"]

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Tokenized training and validation samples, the phases that order the training samples
    (indices into ``train``), and what tokenisation did."""

    train: list[TokenizedSample]
    eval: list[TokenizedSample]
    phases: list[Phase]
    stats: TokenizeStats = field(default_factory=TokenizeStats)
    chat: bool = False
    """Whether the rows were rendered with a chat template (chat rows, or one given): preparing
    then installed it on the tokenizer, and whoever reuses these samples must do the same."""


def _hold_out(n: int, fraction: float, seed: int) -> set[int]:
    if fraction <= 0 or n < 2:
        return set()
    k = min(n - 1, max(1, round(n * fraction)))
    return set(random.Random(seed).sample(range(n), k))


def prepare_data(
    sources: Sequence[DataSource],
    tokenizer: Any,
    *,
    max_length: int,
    train_on: str = "completion",
    too_long: str = "truncate",
    strategy: str = "stacked",
    epochs: float = 1.0,
    eval_fraction: float = 0.0,
    eval_sources: Sequence[DataSource] = (),
    chat_template: str | None = None,
    seed: int = 0,
) -> PreparedData:
    """Read, normalise and tokenise every source; hold out ``eval_fraction`` of each; group phases.

    Raises:
        DataError: no data, a malformed row (file and line named), or nothing left to train on.
    """
    if not sources:
        raise DataError("no training data: give at least one `data` entry")
    per_source = [read_examples(s.path, split=s.split, hub=s.hub) for s in [*sources, *eval_sources]]
    chat = bool(chat_template) or any(ex.kind == "messages" for exs in per_source for ex in exs)
    if chat:
        ensure_chat_template(tokenizer, chat_template)
    stats = TokenizeStats()
    train: list[TokenizedSample] = []
    evals: list[TokenizedSample] = []
    groups: dict[int, list[int]] = {}
    group_epochs: dict[int, float] = {}
    for k, (source, examples) in enumerate(zip(sources, per_source)):  # stops before eval_sources
        samples = tokenize_examples(examples, tokenizer, max_length, train_on, too_long, source=k, stats=stats)
        if not samples:
            raise DataError(f"{source.path}: no usable rows after tokenisation ({stats.summary()})")
        held = _hold_out(len(samples), eval_fraction, seed + k)
        evals.extend(s for i, s in enumerate(samples) if i in held)
        number = source.phase if strategy == "phased" and source.phase is not None else 0
        start = len(train)
        train.extend(s for i, s in enumerate(samples) if i not in held)
        groups.setdefault(number, []).extend(range(start, len(train)))
        if strategy == "phased" and source.epochs is not None:
            if group_epochs.setdefault(number, source.epochs) != source.epochs:
                raise DataError(f"phase {number}: its data entries give different `epochs`")
    for k, examples in enumerate(per_source[len(sources):], start=len(sources)):
        evals.extend(tokenize_examples(examples, tokenizer, max_length, train_on, too_long, source=k, stats=stats))
    phases = [Phase(n, tuple(groups[n]), group_epochs.get(n, epochs)) for n in sorted(groups)]
    log.info("data: %s", stats.summary())
    return PreparedData(train, evals, phases, stats, chat)


def prepare_for(config: TrainConfig, tokenizer: Any) -> PreparedData:
    """The data of the run ``config`` describes: the one call training and study planning share,
    so both read, hold out and tokenise the rows the same way."""
    p = config.processing
    return prepare_data(config.data, tokenizer, max_length=p.max_length, train_on=p.train_on,
                        too_long=p.too_long, strategy=p.strategy, epochs=config.batch.epochs,
                        eval_fraction=config.evaluation.eval_fraction, eval_sources=config.evaluation.eval_data,
                        chat_template=p.chat_template, seed=config.seed)


def data_key(config: TrainConfig) -> tuple:
    """Every setting :func:`prepare_for` reads (tokenizer included): runs with equal keys share
    their prepared data."""
    p, ev = config.processing, config.evaluation
    sources = tuple((d.path, d.phase, d.epochs, d.split, d.hub) for d in [*config.data, *ev.eval_data])
    return (config.tokenizer or config.model, len(config.data), sources, p.max_length, p.train_on,
            p.too_long, p.strategy, p.chat_template, config.batch.epochs, ev.eval_fraction, config.seed)

