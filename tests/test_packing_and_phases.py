from __future__ import annotations

import random

import pytest

from tunescout.data.packing import collate_packed, pack_bins, plan_micro_batches
from tunescout.data.phases import Phase, build_schedule
from tunescout.data.tokenize import IGNORE, TokenizedSample


def test_pack_bins_respects_capacity_and_keeps_every_item() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(20, 1000) for _ in range(500)]
    bins = pack_bins(lengths, 4096)
    assert sorted(i for b in bins for i in b) == list(range(500))
    assert all(sum(lengths[i] for i in b) <= 4096 for b in bins)
    lower_bound = -(-sum(lengths) // 4096)
    assert len(bins) <= lower_bound + 2  # best-fit decreasing is near-optimal here


def test_pack_bins_rejects_oversized_item() -> None:
    with pytest.raises(ValueError, match="exceeds the micro-batch budget"):
        pack_bins([10, 300], 256)


def test_collate_restarts_positions_and_shifts_targets_per_sample() -> None:
    a = TokenizedSample((1, 2, 3), (IGNORE, 2, 3))
    b = TokenizedSample((4, 5), (4, 5))
    mb = collate_packed([a, b])
    assert mb.input_ids.tolist() == [[1, 2, 3, 4, 5]]
    assert mb.position_ids.tolist() == [[0, 1, 2, 0, 1]]
    # token j predicts label j+1 of the same sample; the last token of each sample predicts nothing
    assert mb.targets.tolist() == [[2, 3, IGNORE, 5, IGNORE]]
    assert mb.num_loss_tokens == a.num_loss_tokens + b.num_loss_tokens == 3


def test_plan_micro_batches_covers_the_effective_batch() -> None:
    samples = [TokenizedSample(tuple(range(n)), tuple(range(n))) for n in (100, 60, 50, 40, 30, 10)]
    mbs = plan_micro_batches(samples, 128)
    assert sum(mb.num_samples for mb in mbs) == 6
    assert all(mb.num_tokens <= 128 for mb in mbs)
    assert sum(mb.num_tokens for mb in mbs) == 290


def test_stacked_schedule_is_deterministic_and_covers_epochs() -> None:
    phases = [Phase(0, tuple(range(10)), 2.0)]
    a = build_schedule(phases, batch_size=4, seed=1)
    b = build_schedule(phases, batch_size=4, seed=1)
    assert a == b
    assert [len(x.indices) for x in a] == [4, 4, 4, 4, 4]
    seen = [i for x in a for i in x.indices]
    assert sorted(seen) == sorted(list(range(10)) * 2)
    assert build_schedule(phases, 4, seed=2) != a


def test_phased_schedule_orders_phases_and_never_mixes_them() -> None:
    phases = [Phase(1, tuple(range(0, 6)), 1.0), Phase(2, tuple(range(6, 10)), 2.0)]
    sched = build_schedule(phases, batch_size=4, seed=0)
    assert [b.phase for b in sched] == [1, 1, 2, 2]
    assert set(sched[0].indices) | set(sched[1].indices) == set(range(6))
    assert all(i >= 6 for b in sched[2:] for i in b.indices)
    assert [len(b.indices) for b in sched] == [4, 2, 4, 4]


def test_fractional_epochs_and_limits() -> None:
    phases = [Phase(0, tuple(range(10)), 1.5)]
    assert sum(len(b.indices) for b in build_schedule(phases, 4, 0)) == 15
    assert sum(len(b.indices) for b in build_schedule(phases, 4, 0, max_samples=9)) == 9
    assert len(build_schedule(phases, 4, 0, max_steps=2)) == 2


def test_rows_shorter_than_the_budget_pack_several_rows_per_micro_batch() -> None:
    samples = [TokenizedSample(tuple(range(1, n + 1)), tuple(range(1, n + 1))) for n in (60, 50, 40, 30, 20, 10, 5)]
    mbs = plan_micro_batches(samples, max_tokens=256, row_tokens=64, pad_id=0)
    assert sum(mb.num_samples for mb in mbs) == 7 and sum(mb.num_tokens for mb in mbs) == 215
    for mb in mbs:
        rows, width = mb.input_ids.shape
        assert width <= 64 and rows * width <= 256
        for r in range(rows):  # padding restarts positions and carries no target
            real = int((mb.input_ids[r] != 0).sum())
            assert (mb.targets[r, real:] == IGNORE).all()
            if real < width:
                assert mb.position_ids[r, real] == 0
