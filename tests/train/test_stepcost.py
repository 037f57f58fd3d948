"""The step-cost model: what it charges each plan shape, and the plans it picks where the answer
is known from the shape of the problem alone."""

from __future__ import annotations

import math
import random

import pytest

from tunescout.data.packing import candidate_plans
from tunescout.train.stepcost import DEVICE_COSTS, DeviceCost, PlanChooser, StepCost

CPU = DeviceCost(throughput=1e10, layer_overhead_s=1e-3, masked_penalty=2.0, varlen_penalty=1.0)


def _cost(varlen: bool | str, device: DeviceCost = CPU) -> StepCost:
    # A ~10M-parameter body: 6e7 FLOPs per token, 4 layers of width 256.
    kernel = varlen if isinstance(varlen, str) else ("varlen" if varlen else "masked")
    return StepCost(token_flops=6e7, head_flops=1e7, pair_flops=12.0 * 4 * 256, layers=4, kernel=kernel,
                    device=device)


def test_a_micro_batch_costs_overhead_tokens_and_attention_pairs() -> None:
    masked, varlen = _cost(False), _cost(True)
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
    masked = PlanChooser(_cost(False, heavy_attention), max_tokens=4096, max_length=4096)
    name, _ = masked(lengths)
    assert name == "sample-per-row"  # packing short samples into 4k rows would be quadratic in the row
    name, plan = PlanChooser(_cost(True), max_tokens=4096, max_length=4096)(lengths)
    assert name == "one-row" and all(len(mb) == 1 for mb in plan)  # varlen: packing costs nothing


def test_overhead_bound_batches_of_short_samples_are_packed() -> None:
    lengths = _lengths(256, 8, 30)
    overhead_bound = DeviceCost(throughput=1e12, layer_overhead_s=5e-3, masked_penalty=2.0, varlen_penalty=1.0)
    chooser = PlanChooser(_cost(False, overhead_bound), max_tokens=1024, max_length=64)
    name, plan = chooser(lengths)
    plans = candidate_plans(lengths, 1024, 64)
    assert len(plan) == min(len(p) for p in plans.values())  # the fewest forward passes wins
    assert name != "sample-per-row" or len(plans["sample-per-row"]) == len(plan)


def test_the_choice_is_deterministic_and_refused_packing_leaves_one_shape() -> None:
    lengths = _lengths(40, 20, 400, seed=3)
    a = PlanChooser(_cost(False), 2048, 1024)
    b = PlanChooser(_cost(False), 2048, 1024)
    assert a(lengths) == b(lengths)
    name, _ = PlanChooser(_cost(False), 2048, 1024, pack=False)(lengths)
    assert name == "sample-per-row"
    eval_only = PlanChooser(_cost(False), 2048, 1024)
    eval_only(lengths, count=False)
    assert eval_only.chosen == {} and eval_only.predicted_s == []


def test_the_summary_compares_prediction_and_measurement_past_the_warm_up_step() -> None:
    chooser = PlanChooser(_cost(False), 2048, 1024)
    for seed in range(3):
        chooser(_lengths(16, 20, 300, seed=seed))
    line = chooser.summary([9.9, *chooser.predicted_s[1:]])  # measured = predicted after the warm-up
    assert line.startswith("packing by cost model: ") and "(ratio 1.00, steps 2-3)" in line


def test_every_device_type_has_positive_constants() -> None:
    for cost in DEVICE_COSTS.values():
        assert cost.throughput > 0 and cost.layer_overhead_s >= 0 and cost.masked_penalty > 0


def test_flex_blocks_cost_the_varlen_pairs_plus_a_diagonal_band() -> None:
    """Flex attention skips empty blocks: a packed row costs about its samples' pairs (as varlen)
    plus a band of partly filled 128-token blocks, far below the dense mask's W²."""
    from tunescout.train.stepcost import FLEX_BLOCK

    flex_device = DeviceCost(throughput=1e10, layer_overhead_s=1e-3, masked_penalty=2.0, varlen_penalty=1.0,
                             block_penalty=1.5)
    blocks, varlen, masked = (_cost(k, flex_device) for k in ("blocks", "varlen", "masked"))
    rows = [[300, 200, 100, 400]]  # one row of 1000
    attn = lambda c: c.micro_batch(rows) - 4e-3 - 6e7 * 1000 / 1e10  # noqa: E731 - overhead and tokens off
    pairs = sum(s * s for s in rows[0]) + 2 * FLEX_BLOCK * 1000
    assert attn(blocks) == pytest.approx(1.5 * 12 * 4 * 256 * pairs / 1e10)
    assert attn(varlen) < attn(blocks) < attn(masked)
    # where nobody measured flex, the masked penalty stands in
    assert _cost("blocks", CPU).micro_batch(rows) > _cost("varlen", CPU).micro_batch(rows)
    lengths = _lengths(64, 20, 1000)
    heavy_masks = DeviceCost(throughput=1e10, layer_overhead_s=1e-4, masked_penalty=50.0, varlen_penalty=1.0,
                             block_penalty=1.5)
    name, _ = PlanChooser(_cost("blocks", heavy_masks), max_tokens=4096, max_length=4096)(lengths)
    assert name != "sample-per-row"  # with empty blocks skipped, packing pays again


def test_attention_kernels_of_the_transformers_implementations() -> None:
    from tunescout.train.stepcost import attention_kernel

    assert [attention_kernel(a) for a in ("sdpa", "eager", "flash_attention_2", "flash_attention_3",
                                          "flex_attention")] == ["masked", "masked", "varlen", "varlen", "blocks"]


def test_group_cost_equals_the_micro_batch_cost() -> None:
    for varlen in (False, True, "blocks"):
        cost = _cost(varlen)
        rows = [[300, 100], [250], [90, 60, 40]]
        widths = [sum(r) for r in rows]
        got = cost.group(len(rows), max(widths), sum(widths), sum(w * w for w in widths),
                         sum(s * s for r in rows for s in r))
        assert got == pytest.approx(cost.micro_batch(rows))


def test_rows_are_grouped_by_least_cost_not_filled_to_the_budget() -> None:
    """One 900-token row and fifteen short ones: filling the budget pads the short rows to 900;
    the least-cost grouping gives the long row a micro-batch of its own."""
    from tunescout.data.packing import group_rows

    widths = [900] + [60] * 15
    cost = _cost(False)
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
