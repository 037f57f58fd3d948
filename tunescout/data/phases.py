"""The order in which samples are seen: stacked (one shuffled stream) or phased (in sequence).

The schedule is a pure function of the sample counts, the strategy and the seed, so a resumed
run rebuilds exactly the same batches and continues from its step number.

How long it runs follows Hugging Face's ``TrainingArguments``: ``max_steps`` (or
``max_samples``) is the total length and overrides the epochs, cycling through the data with a
fresh shuffle on each pass when one pass is not enough. Stacked data (one phase) then streams
whole epochs until the limit; phased data repeat the whole curriculum, every phase with its own
epochs, as often as the limit needs (a batch still never spans two phases). Cycling only
continues the stream the epochs would give, so a limit reached inside that stream cuts the same
batches as it did before ``max_steps`` cycled.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator, Sequence

__all__ = ["Batch", "Phase", "build_schedule", "describe_length", "length_source"]


@dataclass(frozen=True)
class Phase:
    """A group of samples trained together: global sample indices and how many epochs."""

    number: int
    indices: tuple[int, ...]
    epochs: float


@dataclass(frozen=True)
class Batch:
    """The samples of one optimizer step."""

    indices: tuple[int, ...]
    phase: int
    epoch: float
    """Passes over the phase's samples at the end of this batch, fractional, counting every pass
    (those of earlier cycles too, so it only grows within a phase)."""


def _epoch_stream(indices: Sequence[int], epochs: float, rng: random.Random, endless: bool) -> Iterator[int]:
    """Whole shuffled passes, then the first part of one more for a fractional epoch; ``endless``:
    whole passes without end (the caller stops at its limit).

    Lazy, so an endless stream costs nothing, and the shuffles draw from ``rng`` in the same order
    as building every pass up front would.
    """
    e = 0
    while endless or e < epochs:
        order = list(indices)
        rng.shuffle(order)
        take = len(order) if endless or e + 1 <= epochs else round(len(order) * (epochs - e))
        yield from order[:take]
        e += 1


def _chunks(stream: Iterator[int], size: int) -> Iterator[list[int]]:
    chunk: list[int] = []
    for index in stream:
        chunk.append(index)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def build_schedule(
    phases: Sequence[Phase],
    batch_size: int,
    seed: int,
    max_samples: int | None = None,
    max_steps: int | None = None,
) -> list[Batch]:
    """Cut the phases' shuffled streams into batches of ``batch_size`` samples.

    Phases run in the order given; a batch never spans two phases (the last batch of a phase may
    be smaller). Stacked training is a single phase holding every sample. Without a limit each
    phase runs its ``epochs`` once. ``max_steps`` and ``max_samples`` are the run's total length
    instead, whichever comes first, as in Hugging Face's ``TrainingArguments``: they override
    the epochs and cycle through the data when it takes more than one pass (a single phase
    streams epochs without end, several phases repeat the whole curriculum; see the module
    docstring). The sweep planner calls this same function, so planned compute matches training.
    """
    rng = random.Random(seed)
    limited = max_samples is not None or max_steps is not None
    endless = limited and len(phases) == 1 and bool(phases[0].indices)
    batches: list[Batch] = []
    seen = 0
    passed = [0] * len(phases)  # samples each phase has trained, over every cycle
    while True:
        seen_before_cycle = seen
        for k, phase in enumerate(phases):
            per_epoch = max(1, len(phase.indices))
            for chunk in _chunks(_epoch_stream(phase.indices, phase.epochs, rng, endless), batch_size):
                if max_samples is not None:
                    chunk = chunk[: max(0, max_samples - seen)]
                if not chunk or (max_steps is not None and len(batches) >= max_steps):
                    return batches
                seen += len(chunk)
                passed[k] += len(chunk)
                batches.append(Batch(tuple(chunk), phase.number, passed[k] / per_epoch))
        # Another cycle only under a limit, and only if the last one trained anything (an empty
        # curriculum would loop for ever).
        if not limited or seen == seen_before_cycle:
            return batches


def length_source(schedule: Sequence[Batch], max_samples: int | None = None, max_steps: int | None = None) -> str:
    """Which setting ended ``schedule``: ``max_steps``, ``max_samples`` or ``epochs``.

    With both limits set the one reached first ended it (``max_steps`` when both hold at once).
    """
    if max_steps is not None and len(schedule) == max_steps:
        return "max_steps"
    if max_samples is not None and sum(len(b.indices) for b in schedule) == max_samples:
        return "max_samples"
    return "epochs"


def describe_length(
    schedule: Sequence[Batch], train_samples: int, max_samples: int | None = None, max_steps: int | None = None
) -> str:
    """One log phrase for the run's length and what set it, e.g.
    ``8 steps, 32 samples (2.00 passes over 16 training samples), set by max_steps``.

    A run that is shorter or longer than its epochs because of a limit says so, instead of
    leaving the reader to work out why the step count differs from the epochs.
    """
    samples = sum(len(b.indices) for b in schedule)
    passes = samples / train_samples if train_samples else 0.0
    return (f"{len(schedule)} steps, {samples} samples ({passes:.2f} passes over {train_samples} training "
            f"samples), set by {length_source(schedule, max_samples, max_steps)}")
