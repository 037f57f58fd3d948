"""Padding-free micro-batches under a token budget.

An optimizer step sees ``batch_size`` samples (the effective batch). They are bin-packed into
micro-batches of at most ``max_tokens`` tokens each, every micro-batch one row of concatenated
samples whose position ids restart at 0 for each sample. Transformers reads the restarts and
keeps attention inside each sample (block-diagonal causal mask for SDPA/eager, varlen kernels
for flash attention), so a packed sample sees exactly what it would see alone, and no compute
is spent on padding.

Targets are shifted *per sample* before concatenation: the last token of a sample predicts
nothing, never the first token of its neighbour.

For flash attention the boundaries can also travel explicitly (``boundaries=True``): the
cumulative sequence lengths and the longest sequence, the ``cu_seq_lens_q``/``cu_seq_lens_k``/
``max_length_q``/``max_length_k`` keyword arguments transformers' varlen path takes (the shape
``DataCollatorWithFlattening(return_flash_attn_kwargs=True)`` produces). Given them, the kernel
does not infer the boundaries from the position ids again in every layer, and the longest
length is a Python int, so no layer waits for the GPU to report it.

Architectures whose masks ignore the position ids cannot be packed (see
:mod:`tunescout.train.accel`); ``pack=False`` puts each sample in a row of its own instead.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from tunescout.data.tokenize import IGNORE, TokenizedSample

__all__ = ["PLAN_SHAPES", "GroupCost", "MicroBatch", "Plan", "candidate_plans", "collate_packed", "collate_plan",
           "group_rows", "pack_bins", "plan_micro_batches", "plan_rows"]


def pack_bins(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Best-fit-decreasing bin packing of item ``lengths`` into bins of ``capacity``.

    Items go longest first into the fullest bin that still has room (a sorted list of free
    space makes each placement O(log bins)); this packs as tightly as first-fit-decreasing and
    stays fast for effective batches of thousands of samples.

    Returns:
        Bins as lists of item indices, in a deterministic order.

    Raises:
        ValueError: an item is longer than ``capacity``.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free tokens, bin index), kept sorted
    for i in order:
        size = lengths[i]
        if size > capacity:
            raise ValueError(f"item of {size} tokens exceeds the micro-batch budget of {capacity}")
        pos = bisect.bisect_left(free, (size, -1))
        if pos < len(free):
            room, b = free.pop(pos)
            bins[b].append(i)
            bisect.insort(free, (room - size, b))
        else:
            bins.append([i])
            bisect.insort(free, (capacity - size, len(bins) - 1))
    return bins


@dataclass
class MicroBatch:
    """Packed rows, ``[R, L]`` tensors ready for a causal LM forward pass.

    Each row holds whole samples back to back; rows shorter than the longest are filled with
    padding that forms its own (ignored) sequence. With one row there is no padding at all.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    targets: torch.Tensor
    """Next-token targets, already shifted per sample; ``-100`` where no loss is taken."""
    num_samples: int
    num_tokens: int
    """Real (sample) tokens, padding excluded."""
    cu_seq_lens: torch.Tensor | None = None
    """With ``boundaries``: int32 offsets of every sequence in the flattened ``[R * L]`` micro-batch,
    from 0 to ``R * L`` (a row's padding counts as a sequence of its own)."""
    max_seq_len: int | None = None
    """With ``boundaries``: the longest of those sequences."""

    @property
    def num_loss_tokens(self) -> int:
        return int((self.targets != IGNORE).sum())

    def attention_kwargs(self) -> dict[str, torch.Tensor | int]:
        """The explicit sequence boundaries for flash attention's varlen kernels, or {} without them."""
        if self.cu_seq_lens is None:
            return {}
        return {"cu_seq_lens_q": self.cu_seq_lens, "cu_seq_lens_k": self.cu_seq_lens,
                "max_length_q": self.max_seq_len, "max_length_k": self.max_seq_len}

    def to(self, device: torch.device | str) -> "MicroBatch":
        return MicroBatch(
            self.input_ids.to(device, non_blocking=True),
            self.position_ids.to(device, non_blocking=True),
            self.targets.to(device, non_blocking=True),
            self.num_samples,
            self.num_tokens,
            None if self.cu_seq_lens is None else self.cu_seq_lens.to(device, non_blocking=True),
            self.max_seq_len,
        )


def _row(samples: Sequence[TokenizedSample]) -> tuple[list[int], list[int], list[int]]:
    ids: list[int] = []
    pos: list[int] = []
    tgt: list[int] = []
    for s in samples:
        ids.extend(s.input_ids)
        pos.extend(range(len(s.input_ids)))
        tgt.extend(s.labels[1:])
        tgt.append(IGNORE)
    return ids, pos, tgt


def collate_packed(rows: Sequence[Sequence[TokenizedSample]] | Sequence[TokenizedSample], pad_id: int = 0,
                   boundaries: bool = False) -> MicroBatch:
    """Concatenate the samples of each row; pad rows to the longest with an ignored sequence.

    ``rows`` is a list of rows (each a list of samples), or a flat list of samples for one row.
    ``boundaries`` adds the explicit sequence boundaries (``cu_seq_lens``, ``max_seq_len``).
    """
    if rows and isinstance(rows[0], TokenizedSample):
        rows = [rows]  # type: ignore[list-item]
    built = [_row(r) for r in rows]
    width = max(len(ids) for ids, _, _ in built)
    ids_t, pos_t, tgt_t = [], [], []
    for ids, pos, tgt in built:
        fill = width - len(ids)
        ids_t.append(ids + [pad_id] * fill)
        pos_t.append(pos + list(range(fill)))  # restarts at 0: a separate sequence, never attended to
        tgt_t.append(tgt + [IGNORE] * fill)
    as_tensor = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    mb = MicroBatch(as_tensor(ids_t), as_tensor(pos_t), as_tensor(tgt_t),
                    sum(len(r) for r in rows), sum(len(ids) for ids, _, _ in built))
    if boundaries:
        # Every sample is a sequence, and so is a row's padding: offsets run over the flattened micro-batch.
        seqs = [n for row, (ids, _, _) in zip(rows, built) for n in (*(len(s) for s in row), width - len(ids)) if n]
        mb.cu_seq_lens = torch.tensor([0, *itertools.accumulate(seqs)], dtype=torch.int32)
        mb.max_seq_len = max(seqs)
    return mb


Plan = list[list[list[int]]]
"""A micro-batch plan of one effective batch: micro-batches, each a list of rows, each a list of
sample indices. Every sample is in exactly one row."""


GroupCost = Callable[[int, int, int, int, int], float]
"""The modelled cost of one micro-batch from its rows: ``(rows, width, Σ row lengths, Σ row
lengths², Σ sample lengths²)`` (see :meth:`tunescout.train.stepcost.StepCost.group`)."""

MAX_GROUP_ROWS = 256
"""The most rows :func:`group_rows` considers for one micro-batch (it bounds the search)."""


def group_rows(widths: Sequence[int], max_tokens: int, cost: GroupCost | None = None,
               squares: Sequence[int] | None = None) -> list[list[int]]:
    """Group rows (of ``widths`` tokens) into micro-batches of at most ``max_tokens`` padded tokens.

    Rows are taken longest first and a micro-batch is a run of consecutive rows, padded to its
    first. Without ``cost``, each micro-batch takes rows while they fit. With it, the runs are
    the ones of least total cost, found exactly by dynamic programming over the sorted rows: a
    few more micro-batches can beat one padded to a long row (``squares``: each row's Σ of its
    samples' squared lengths, for a varlen kernel's attention).
    """
    order = sorted(range(len(widths)), key=lambda k: (-widths[k], k))
    if cost is None:
        batches: list[list[int]] = []
        for k in order:
            if batches and (len(batches[-1]) + 1) * widths[batches[-1][0]] <= max_tokens:
                batches[-1].append(k)
            else:
                batches.append([k])
        return batches
    w = [widths[k] for k in order]
    sq = [squares[k] for k in order] if squares is not None else [x * x for x in w]
    sum_w, sum_w2, sum_sq = [0], [0], [0]
    for x, q in zip(w, sq):
        sum_w.append(sum_w[-1] + x)
        sum_w2.append(sum_w2[-1] + x * x)
        sum_sq.append(sum_sq[-1] + q)
    n = len(w)
    best = [0.0] + [float("inf")] * n
    start = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j - 1, max(-1, j - 1 - MAX_GROUP_ROWS), -1):  # the run order[i:j], padded to w[i]
            rows = j - i
            if rows * w[i] > max_tokens and rows > 1:
                break
            c = best[i] + cost(rows, w[i], sum_w[j] - sum_w[i], sum_w2[j] - sum_w2[i], sum_sq[j] - sum_sq[i])
            if c < best[j]:
                best[j], start[j] = c, i
    bounds, j = [], n
    while j > 0:
        bounds.append((start[j], j))
        j = start[j]
    return [order[i:j] for i, j in reversed(bounds)]


def plan_rows(lengths: Sequence[int], max_tokens: int, row_tokens: int | None = None, pack: bool = True,
              cost: GroupCost | None = None) -> Plan:
    """Where each sample of an effective batch goes: see :func:`plan_micro_batches` (same arguments,
    sample lengths instead of samples); ``cost`` groups the rows into micro-batches by least
    modelled cost (:func:`group_rows`) instead of filling each to the budget."""
    if not pack:
        if lengths and max(lengths) > max_tokens:
            raise ValueError(f"a sample of {max(lengths)} tokens exceeds the micro-batch budget of {max_tokens}")
        rows = [[i] for i in range(len(lengths))]
    elif row_tokens is None or row_tokens >= max_tokens:
        return [[b] for b in pack_bins(lengths, max_tokens)]
    else:
        rows = pack_bins(lengths, row_tokens)
    widths = [sum(lengths[i] for i in r) for r in rows]
    squares = [sum(lengths[i] ** 2 for i in r) for r in rows]
    return [[rows[k] for k in b] for b in group_rows(widths, max_tokens, cost, squares)]


def collate_plan(samples: Sequence[TokenizedSample], plan: Plan, pad_id: int = 0,
                 boundaries: bool = False) -> list[MicroBatch]:
    """The micro-batches of a plan, each row's samples concatenated (:func:`collate_packed`)."""
    return [collate_packed([[samples[i] for i in row] for row in mb], pad_id, boundaries) for mb in plan]


def plan_micro_batches(
    samples: Sequence[TokenizedSample], max_tokens: int, row_tokens: int | None = None, pad_id: int = 0,
    *, boundaries: bool = False, pack: bool = True,
) -> list[MicroBatch]:
    """Split one effective batch into packed micro-batches of at most ``max_tokens`` tokens.

    Args:
        max_tokens: budget of one micro-batch, padding included.
        row_tokens: longest packed row. ``None`` packs each micro-batch into a single row, which
            is ideal with flash attention's variable-length kernels. With SDPA or eager
            attention the block-diagonal mask still costs compute quadratic in the row length,
            so shorter rows (several per micro-batch) are much faster there.
        boundaries: attach the explicit sequence boundaries flash attention's varlen kernels take
            (:meth:`MicroBatch.attention_kwargs`).
        pack: ``False`` puts every sample in a row of its own (right-padded to the longest row of
            its micro-batch, rows grouped by length): for architectures that cannot keep packed
            samples apart, and the plan of choice where attention cost grows with the row.

    Raises:
        ValueError: a sample longer than ``max_tokens`` (or ``row_tokens``).
    """
    plan = plan_rows([len(s) for s in samples], max_tokens, row_tokens, pack)
    return collate_plan(samples, plan, pad_id, boundaries)


PLAN_SHAPES = ("one-row", "rows-max-length", "rows-longest", "sample-per-row")
"""The plans :func:`candidate_plans` offers, in the order ties are broken: one packed row per
micro-batch; rows packed up to ``max_length``; rows packed up to the batch's longest sample; one
sample per row, rows grouped by length (lightly padded)."""


def candidate_plans(lengths: Sequence[int], max_tokens: int, max_length: int, pack: bool = True,
                    cost: GroupCost | None = None) -> dict[str, Plan]:
    """Every plan shape of :data:`PLAN_SHAPES` for one effective batch, all under ``max_tokens``
    (only ``sample-per-row`` when ``pack`` is False), rows grouped by ``cost`` when given; a
    shape that gives the same plan as an earlier one is left out."""
    if not pack:
        return {"sample-per-row": plan_rows(lengths, max_tokens, pack=False, cost=cost)}
    longest = max(lengths) if lengths else 1
    plans = {"one-row": plan_rows(lengths, max_tokens, None),
             "rows-max-length": plan_rows(lengths, max_tokens, max_length, cost=cost),
             "rows-longest": plan_rows(lengths, max_tokens, longest, cost=cost),
             "sample-per-row": plan_rows(lengths, max_tokens, pack=False, cost=cost)}
    out: dict[str, Plan] = {}
    for name, plan in plans.items():
        if plan not in out.values():
            out[name] = plan
    return out
