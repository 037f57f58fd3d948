"""The order in which samples are seen: stacked (one shuffled stream) or phased (in sequence).

The schedule is a pure function of the sample counts, the strategy and the seed, so a resumed
run rebuilds exactly the same batches and continues from its step number.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Sequence

__all__ = ["Batch", "Phase", "build_schedule"]


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
    """Fractional epoch within the phase at the end of this batch."""


def _epoch_stream(indices: Sequence[int], epochs: float, rng: random.Random) -> list[int]:
    """Whole shuffled passes, then the first part of one more for a fractional epoch."""
    stream: list[int] = []
    for e in range(math.ceil(epochs)):
        order = list(indices)
        rng.shuffle(order)
        take = len(order) if e + 1 <= epochs else round(len(order) * (epochs - e))
        stream.extend(order[:take])
    return stream


def build_schedule(
    phases: Sequence[Phase],
    batch_size: int,
    seed: int,
    max_samples: int | None = None,
    max_steps: int | None = None,
) -> list[Batch]:
    """Cut the phases' shuffled streams into batches of ``batch_size`` samples.

    Phases run in the order given; a batch never spans two phases (the last batch of a phase may
    be smaller). Stacked training is a single phase holding every sample. ``max_samples`` and
    ``max_steps`` cut the schedule short, whichever comes first.
    """
    rng = random.Random(seed)
    batches: list[Batch] = []
    seen = 0
    for phase in phases:
        stream = _epoch_stream(phase.indices, phase.epochs, rng)
        per_epoch = max(1, len(phase.indices))
        for start in range(0, len(stream), batch_size):
            chunk = stream[start : start + batch_size]
            if max_samples is not None:
                chunk = chunk[: max(0, max_samples - seen)]
            if not chunk or (max_steps is not None and len(batches) >= max_steps):
                return batches
            seen += len(chunk)
            batches.append(Batch(tuple(chunk), phase.number, (start + len(chunk)) / per_epoch))
    return batches
