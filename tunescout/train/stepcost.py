"""A modelled time for each way of splitting an effective batch, so the fastest plan is chosen.

Which micro-batch plan is fastest depends on the model, the attention kernel and the device, not
on a fixed row length. The time of one forward and backward pass over a micro-batch of ``R``
rows padded to ``W`` tokens is modelled as

    t = layers · overhead + (token_flops · R · W + penalty · pair_flops · pairs) / throughput

* ``token_flops``: the body's matmul FLOPs per token, ``4·N + 2·N_trainable`` (forward, input
  gradient, weight gradient when trained; :mod:`tunescout.train.flops`), paid by padding too;
* ``pair_flops = 12 · layers · width``: QKᵀ and AV per (query, key) pair, forward and backward;
* ``pairs``: what the kernel computes (:func:`attention_kernel`). With a dense mask (SDPA,
  eager) every row costs ``W²``, however its samples are packed: packing many short samples into
  a long row makes attention quadratic in the row. With flash attention's varlen kernels it is
  ``Σ s²`` over the sequences (a row's padding is one), so packing is free. Flex attention skips
  the blocks of ``FLEX_BLOCK × FLEX_BLOCK`` pairs its block mask leaves empty, so it computes the
  varlen pairs plus the partly filled blocks along the diagonal and at every sample boundary,
  about ``2 · FLEX_BLOCK · W`` more per row;
* ``overhead``: the fixed cost of running one layer forward and backward once (kernel launches,
  Python dispatch), which favours few micro-batches; ``penalty``: how much slower the device runs
  attention FLOPs than matmul FLOPs.

``throughput``, ``overhead`` and ``penalty`` are per device type (:data:`DEVICE_COSTS`), fitted
by ``benchmarks/step_cost.py`` on measured passes (the fit and its error are in
benchmarks/README.md). They are constants, not measured at run time: the plan of every step
must be the same on a resume, so that a resumed run is the run it continues. The output
projection runs on the loss tokens whatever the plan, so it only enters the absolute time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Sequence

import torch

from tunescout.data.packing import PLAN_SHAPES, Plan, candidate_plans
from tunescout.train.accel import uses_varlen_kernel
from tunescout.train.flops import ModelShape, peak_bf16_flops

__all__ = ["ATTENTION_KERNELS", "DEVICE_COSTS", "FLEX_BLOCK", "DeviceCost", "PlanChooser", "StepCost",
           "attention_kernel"]

log = logging.getLogger("tunescout.train")

ATTENTION_KERNELS = ("masked", "varlen", "blocks")
"""How a kernel pays for packed rows: a dense mask over each row, variable-length sequences, or
the non-empty blocks of a block mask."""

FLEX_BLOCK = 128
"""Flex attention's block size (torch's ``_DEFAULT_SPARSE_BLOCK_SIZE``), the granularity at which it
skips masked-out pairs."""


def attention_kernel(attn_implementation: str) -> str:
    """The :data:`ATTENTION_KERNELS` entry of a transformers attention implementation."""
    if uses_varlen_kernel(attn_implementation):
        return "varlen"
    return "blocks" if attn_implementation == "flex_attention" else "masked"


@dataclass(frozen=True)
class DeviceCost:
    """What a device type adds to the FLOPs (see the module docstring)."""

    throughput: float
    """Matmul FLOP/s reached in training passes."""
    layer_overhead_s: float
    """Seconds of fixed cost per layer per forward+backward pass."""
    masked_penalty: float
    """Attention FLOPs under a mask cost this many matmul FLOPs."""
    varlen_penalty: float
    """Attention FLOPs in varlen kernels cost this many matmul FLOPs."""
    block_penalty: float | None = None
    """Attention FLOPs in flex attention's blocks cost this many matmul FLOPs; None where no value
    is set (a CPU, which cannot train flex attention: the masked penalty stands in)."""


DEVICE_COSTS: dict[str, DeviceCost] = {
    # Fitted by benchmarks/step_cost.py on this project's 2-core CPU at 2 threads, float32
    # (2026-12-01: 75 passes of three random Llamas, median error 6%; benchmarks/README.md). CPU
    # attention has no varlen kernel, so its varlen penalty is the masked one (never used there),
    # and flex attention cannot train on a CPU (torch has no backward for it there).
    "cpu": DeviceCost(throughput=1.9e11, layer_overhead_s=1.9e-3, masked_penalty=1.7, varlen_penalty=1.7),
    # Not fitted (no GPU measured yet): 40% of an H100's bf16 peak, ~30 kernels of ~5 us per layer
    # forward and backward, flash attention near matmul speed and masked SDPA (memory-efficient
    # kernel) about half of it, flex attention's Triton kernel between the two.
    # benchmarks/step_cost.py --device cuda fits them on a GPU.
    "cuda": DeviceCost(throughput=4.0e14, layer_overhead_s=1.5e-4, masked_penalty=2.0, varlen_penalty=1.3,
                       block_penalty=1.6),
}


@dataclass(frozen=True)
class StepCost:
    """The modelled seconds of a micro-batch plan for one model, kernel and device type."""

    token_flops: float
    head_flops: float
    """Output projection FLOPs per loss token."""
    pair_flops: float
    layers: int
    kernel: str
    """One of :data:`ATTENTION_KERNELS`."""
    device: DeviceCost

    def __post_init__(self) -> None:
        if self.kernel not in ATTENTION_KERNELS:
            raise ValueError(f"kernel must be one of {ATTENTION_KERNELS}, got {self.kernel!r}")

    @classmethod
    def for_model(cls, model: torch.nn.Module, device: torch.device, kernel: str) -> "StepCost":
        shape = ModelShape.of(model)
        cost = DEVICE_COSTS.get(device.type, DEVICE_COSTS["cpu"])
        peak = peak_bf16_flops(device) if device.type == "cuda" else None
        if peak is not None:  # the known GPU's own peak, at the same 40% the table assumes for an H100
            cost = replace(cost, throughput=0.4 * peak)
        return cls(token_flops=float(4 * shape.body + 2 * shape.body_trainable),
                   head_flops=float(4 * shape.head + 2 * shape.head_trainable),
                   pair_flops=12.0 * shape.layers * shape.width, layers=max(1, shape.layers), kernel=kernel,
                   device=cost)

    def micro_batch(self, rows: Sequence[Sequence[int]]) -> float:
        """Seconds of one micro-batch whose rows hold samples of these lengths (loss head excluded)."""
        widths = [sum(r) for r in rows]
        return self.group(len(rows), max(widths), sum(widths), sum(w * w for w in widths),
                          sum(s * s for r in rows for s in r))

    def group(self, rows: int, width: int, sum_w: int, sum_w2: int, sum_sq: int) -> float:
        """Seconds of a micro-batch of ``rows`` rows padded to ``width`` from row sums: Σ row
        lengths, Σ row lengths², Σ sample lengths² (what the row-grouping search has at hand)."""
        if self.kernel == "masked":
            pairs = rows * width * width
            penalty = self.device.masked_penalty
        else:  # each sample, and each row's padding, is a sequence of its own
            pairs = sum_sq + rows * width * width - 2 * width * sum_w + sum_w2
            penalty = self.device.varlen_penalty
            if self.kernel == "blocks":  # the partly filled blocks along the diagonal and at boundaries,
                blocks = -(-width // FLEX_BLOCK)  # never more than every block of the row
                pairs = min(pairs + 2 * FLEX_BLOCK * rows * width, rows * (blocks * FLEX_BLOCK) ** 2)
                penalty = self.device.masked_penalty if self.device.block_penalty is None else self.device.block_penalty
        flops = self.token_flops * rows * width + penalty * self.pair_flops * pairs
        return self.layers * self.device.layer_overhead_s + flops / self.device.throughput

    def plan(self, plan: Plan, lengths: Sequence[int], loss_tokens: int = 0) -> float:
        """Seconds of a whole plan over samples of ``lengths``, ``loss_tokens`` of them with loss."""
        body = sum(self.micro_batch([[lengths[i] for i in row] for row in mb]) for mb in plan)
        return body + self.head_flops * loss_tokens / self.device.throughput


class PlanChooser:
    """Picks, for each effective batch, the candidate plan with the least modelled time, and keeps
    what it chose and predicted so the run can log it against the time it measured."""

    def __init__(self, cost: StepCost, max_tokens: int, max_length: int, pack: bool = True) -> None:
        self.cost, self.max_tokens, self.max_length, self.pack = cost, max_tokens, max_length, pack
        self.chosen: dict[str, int] = {}
        self.predicted_s: list[float] = []

    def __call__(self, lengths: Sequence[int], loss_tokens: int = 0, count: bool = True) -> tuple[str, Plan]:
        """The fastest plan's shape and plan; ``count`` False (evaluation batches) keeps it out of
        the run's tally."""
        plans = candidate_plans(lengths, self.max_tokens, self.max_length, self.pack, cost=self.cost.group)
        timed = {name: self.cost.plan(plan, lengths, loss_tokens) for name, plan in plans.items()}
        name = min(timed, key=lambda n: (timed[n], PLAN_SHAPES.index(n)))
        if count:
            self.chosen[name] = self.chosen.get(name, 0) + 1
            self.predicted_s.append(timed[name])
        log.debug("plan %s, predicted %.4fs (%s)", name, timed[name],
                  ", ".join(f"{n} {t:.4f}s" for n, t in timed.items()))
        return name, plans[name]

    def summary(self, measured_s: Sequence[float]) -> str:
        """The plans chosen so far, and the predicted against the measured seconds of the steps
        both cover (the first step, a warm-up, left out when there are more)."""
        n = min(len(self.predicted_s), len(measured_s))
        skip = 1 if n > 1 else 0
        predicted = sum(self.predicted_s[skip:n]) / max(1, n - skip)
        measured = sum(measured_s[skip:n]) / max(1, n - skip)
        shapes = ", ".join(f"{k} x{v}" for k, v in sorted(self.chosen.items(), key=lambda kv: -kv[1]))
        return (f"packing by cost model: {shapes}; predicted {predicted:.3f}s per step, measured {measured:.3f}s "
                f"(ratio {measured / predicted if predicted else float('nan'):.2f}, steps {skip + 1}-{n})")
