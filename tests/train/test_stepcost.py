"""The step-cost model: what it charges each plan shape, and the plans it picks where the answer
is known from the shape of the problem alone."""

from __future__ import annotations

import math
import random

import pytest

from tunescout.data.packing import candidate_plans
from tunescout.train.stepcost import DEVICE_COSTS, DeviceCost, PlanChooser, StepCost

CPU = DeviceCost(throughput=1e10, layer_overhead_s=1e-3, masked_penalty=2.0, varlen_penalty=1.0)


def _cost(kernel: str, device: DeviceCost = CPU) -> StepCost:
    # A ~10M-parameter body: 6e7 FLOPs per token, 4 layers of width 256.
    return StepCost(token_flops=6e7, head_flops=1e7, pair_flops=12.0 * 4 * 256, layers=4, kernel=kernel,
                    device=device)


def test_a_micro_batch_costs_overhead_tokens_and_attention_pairs() -> None:
    masked, varlen = _cost("masked"), _cost("varlen")
    rows = [[100, 50], [120]]  # two rows padded to 150
    overhead = 4 * 1e-3
    assert masked.micro_batch(rows) == pytest.approx(
        overhead + (6e7 * 2 * 150 + 2.0 * 12 * 4 * 256 * 2 * 150 ** 2) / 1e10)
    pairs = 100 ** 2 + 50 ** 2 + 120 ** 2 + 30 ** 2  # each sample, and the second row's padding
    assert varlen.micro_batch(rows) == pytest.approx(overhead + (6e7 * 2 * 150 + 12 * 4 * 256 * pairs) / 1e10)
    plan = [[[0, 1], [2]]]
    assert masked.plan(plan, [100, 50, 120], loss_tokens=10) == pytest.approx(
        masked.micro_batch(rows) + 1e7 * 10 / 1e10)


def _lengths(n: int, lo: int, hi: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [int(math.exp(rng.uniform(math.log(lo), math.log(hi)))) for _ in range(n)]


def test_long_rows_under_a_mask_are_avoided_and_varlen_packs_into_one_row() -> None:
    lengths = _lengths(64, 20, 1000)
    heavy_attention = DeviceCost(throughput=1e10, layer_overhead_s=1e-4, masked_penalty=50.0, varlen_penalty=1.0)
    masked = PlanChooser(_cost("masked", heavy_attention), max_tokens=4096, max_length=4096)
    name, _ = masked(lengths)
    assert name == "sample-per-row"  # packing short samples into 4k rows would be quadratic in the row
    name, plan = PlanChooser(_cost("varlen"), max_tokens=4096, max_length=4096)(lengths)
    assert name == "one-row" and all(len(mb) == 1 for mb in plan)  # varlen: packing costs nothing


def test_overhead_bound_batches_of_short_samples_are_packed() -> None:
    lengths = _lengths(256, 8, 30)
    overhead_bound = DeviceCost(throughput=1e12, layer_overhead_s=5e-3, masked_penalty=2.0, varlen_penalty=1.0)
    chooser = PlanChooser(_cost("masked", overhead_bound), max_tokens=1024, max_length=64)
    name, plan = chooser(lengths)
    plans = candidate_plans(lengths, 1024, 64)
    assert len(plan) == min(len(p) for p in plans.values())  # the fewest forward passes wins
    assert name != "sample-per-row" or len(plans["sample-per-row"]) == len(plan)


def test_the_choice_is_deterministic_and_refused_packing_leaves_one_shape() -> None:
    lengths = _lengths(40, 20, 400, seed=3)
    a = PlanChooser(_cost("masked"), 2048, 1024)
    b = PlanChooser(_cost("masked"), 2048, 1024)
    assert a(lengths) == b(lengths)
    name, _ = PlanChooser(_cost("masked"), 2048, 1024, pack=False)(lengths)
    assert name == "sample-per-row"
    eval_only = PlanChooser(_cost("masked"), 2048, 1024)
    eval_only(lengths, count=False)
    assert eval_only.chosen == {} and eval_only.predicted_s == []


def test_the_summary_compares_prediction_and_measurement_past_the_warm_up_step() -> None:
    chooser = PlanChooser(_cost("masked"), 2048, 1024)
    for seed in range(3):
        chooser(_lengths(16, 20, 300, seed=seed))
    line = chooser.summary([9.9, *chooser.predicted_s[1:]])  # measured = predicted after the warm-up
    assert line.startswith("packing by cost model: ") and "(ratio 1.00, steps 2-3)" in line


def test_every_device_type_has_positive_constants() -> None:
    for cost in DEVICE_COSTS.values():
        assert cost.throughput > 0 and cost.layer_overhead_s >= 0 and cost.masked_penalty > 0


def test_flex_blocks_cost_the_varlen_pairs_plus_a_diagonal_band() -> None:
    """Flex attention skips empty blocks: a packed row costs about its samples' pairs (as varlen)
    plus a band of partly filled 128-token blocks, far below the dense mask's W², and never more
    than every block of the row."""
    from tunescout.train.stepcost import FLEX_BLOCK

    flex_device = DeviceCost(throughput=1e10, layer_overhead_s=1e-3, masked_penalty=2.0, varlen_penalty=1.0,
                             block_penalty=1.5)
    per_pair = 12 * 4 * 256 / 1e10

    def attention_s(cost: StepCost, rows: list[list[int]]) -> float:  # overhead and token FLOPs taken off
        width = max(sum(r) for r in rows)
        return cost.micro_batch(rows) - 4e-3 - 6e7 * len(rows) * width / 1e10

    blocks, masked = _cost("blocks", flex_device), _cost("masked", flex_device)
    row = [[300, 200, 100, 400]]  # one row of 1000 tokens
    band = 2 * FLEX_BLOCK * 1000
    assert attention_s(blocks, row) == pytest.approx(1.5 * per_pair * (sum(s * s for s in row[0]) + band))
    assert attention_s(blocks, row) < attention_s(masked, row) / 2
    one_sample = [[200]]  # the band would exceed the row's 2x2 blocks: capped at them
    assert attention_s(blocks, one_sample) == pytest.approx(1.5 * per_pair * 256 ** 2)
    # without a flex constant (a CPU), the masked penalty prices the same pairs
    assert attention_s(_cost("blocks", CPU), row) == pytest.approx(2.0 * per_pair * (sum(s * s for s in row[0]) + band))


def test_with_empty_blocks_skipped_packing_costs_no_more_than_one_sample_per_row() -> None:
    """Under a dense mask at a high attention price, one packed row per micro-batch costs several
    times the best plan; skipping empty blocks, it costs within a few per cent of it."""
    lengths = _lengths(64, 20, 1000)
    heavy_masks = DeviceCost(throughput=1e10, layer_overhead_s=1e-4, masked_penalty=50.0, varlen_penalty=1.0,
                             block_penalty=1.5)
    for kernel, most in (("masked", None), ("blocks", 1.05)):
        cost = _cost(kernel, heavy_masks)
        timed = {n: cost.plan(p, lengths) for n, p in candidate_plans(lengths, 4096, 4096, cost=cost.group).items()}
        ratio = timed["one-row"] / min(timed.values())
        assert ratio > 3 if most is None else ratio < most, (kernel, timed)


def test_an_unknown_kernel_is_refused() -> None:
    with pytest.raises(ValueError, match="kernel must be one of"):
        _cost("varlen-ish")


def test_attention_kernels_of_the_transformers_implementations() -> None:
    from tunescout.train.stepcost import attention_kernel

    assert [attention_kernel(a) for a in ("sdpa", "eager", "flash_attention_2", "flash_attention_3",
                                          "flex_attention")] == ["masked", "masked", "varlen", "varlen", "blocks"]


def test_rows_are_grouped_by_least_cost_not_filled_to_the_budget() -> None:
    """One 900-token row and fifteen short ones: filling the budget pads the short rows to 900;
    the least-cost grouping gives the long row a micro-batch of its own."""
    from tunescout.data.packing import group_rows

    widths = [900] + [60] * 15
    cost = _cost("masked")
    greedy = group_rows(widths, 16384)
    best = group_rows(widths, 16384, cost.group)
    assert greedy == [list(range(16))]
    assert best == [[0], list(range(1, 16))]

    def total(groups, sizes=widths):
        return sum(cost.micro_batch([[sizes[k]] for k in g]) for g in groups)

    assert total(best) < total(greedy)
    # exhaustive check on a small case: the DP's grouping is the cheapest contiguous one
    import itertools

    small = [700, 400, 390, 120, 100, 30]
    order = sorted(range(len(small)), key=lambda k: -small[k])
    dp = group_rows(small, 2048, cost.group)
    cheapest = min(
        ([order[a:b] for a, b in zip((0, *cuts), (*cuts, len(order)))]
         for r in range(len(order)) for cuts in itertools.combinations(range(1, len(order)), r)
         if all(len(g) * small[g[0]] <= 2048 for g in [order[a:b] for a, b in zip((0, *cuts), (*cuts, len(order)))])),
        key=lambda groups: total(groups, small))
    assert total(dp, small) == pytest.approx(total(cheapest, small))
