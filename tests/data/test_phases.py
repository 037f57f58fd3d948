"""Run length as Hugging Face sets it: ``max_steps``/``max_samples`` are totals that cycle the data."""

from __future__ import annotations

from collections import Counter

import pytest

from tunescout.data.phases import Phase, build_schedule, describe_length, length_source

STACKED = [Phase(0, tuple(range(16)), 1.0)]  # 4 batches of 4 per pass


def _passes(schedule, size: int) -> list[list[int]]:
    flat = [i for b in schedule for i in b.indices]
    return [flat[k:k + size] for k in range(0, len(flat), size)]


def test_max_steps_beyond_one_epoch_cycles_with_a_new_shuffle_each_pass() -> None:
    sched = build_schedule(STACKED, batch_size=4, seed=3, max_steps=8)
    assert len(sched) == 8 and all(len(b.indices) == 4 for b in sched)  # HF, TRL and Axolotl train 8
    first, second = _passes(sched, 16)
    assert sorted(first) == sorted(second) == list(range(16))  # every pass sees every sample once
    assert first != second  # ... in a fresh order
    assert sched == build_schedule(STACKED, batch_size=4, seed=3, max_steps=8)  # deterministic
    assert sched != build_schedule(STACKED, batch_size=4, seed=4, max_steps=8)
    assert [b.epoch for b in sched] == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    assert length_source(sched, max_steps=8) == "max_steps"


@pytest.mark.parametrize("epochs", [0.5, 1.0, 3.0])
def test_max_steps_overrides_epochs_and_keeps_the_batches_one_pass_gives(epochs: float) -> None:
    phases = [Phase(0, tuple(range(16)), epochs)]
    sched = build_schedule(phases, batch_size=4, seed=0, max_steps=6)
    assert len(sched) == 6
    assert sched == build_schedule(STACKED, batch_size=4, seed=0, max_steps=6)  # epochs play no part
    # a limit reached inside the epochs' own stream cuts it exactly as before cycling existed
    assert sched[:2] == build_schedule(phases, batch_size=4, seed=0)[:2]


def test_max_samples_is_a_total_that_cycles_too() -> None:
    sched = build_schedule(STACKED, batch_size=5, seed=1, max_samples=40)
    assert sum(len(b.indices) for b in sched) == 40
    assert Counter(i for b in sched for i in b.indices)[0] in (2, 3)  # 2.5 passes
    assert length_source(sched, max_samples=40) == "max_samples"
    both = build_schedule(STACKED, batch_size=5, seed=1, max_samples=40, max_steps=3)  # first reached wins
    assert len(both) == 3 and length_source(both, 40, 3) == "max_steps"


def test_phased_limits_repeat_the_whole_curriculum() -> None:
    phases = [Phase(1, tuple(range(6)), 1.0), Phase(2, tuple(range(6, 10)), 2.0)]
    one = build_schedule(phases, batch_size=4, seed=0)
    assert [b.phase for b in one] == [1, 1, 2, 2]
    sched = build_schedule(phases, batch_size=4, seed=0, max_steps=10)
    assert [b.phase for b in sched] == [1, 1, 2, 2, 1, 1, 2, 2, 1, 1]
    assert sched[:4] == one  # the first cycle is the unlimited schedule
    assert all(len({i < 6 for i in b.indices}) == 1 for b in sched)  # a batch never spans two phases
    assert {i for b in sched[4:6] for i in b.indices} == set(range(6))  # cycle 2 passes phase 1 again
    assert sched[4].indices != one[0].indices or sched[5].indices != one[1].indices  # reshuffled
    assert [b.epoch for b in sched if b.phase == 1] == [4 / 6, 1.0, 10 / 6, 2.0, 16 / 6, 3.0]


def test_without_a_limit_the_epochs_set_the_length() -> None:
    sched = build_schedule([Phase(0, tuple(range(10)), 1.5)], 4, 0, max_steps=100, max_samples=None)
    assert len(sched) == 100
    plain = build_schedule([Phase(0, tuple(range(10)), 1.5)], 4, 0)
    assert length_source(plain) == "epochs" and sum(len(b.indices) for b in plain) == 15
    assert describe_length(plain, 10) == "4 steps, 15 samples (1.50 passes over 10 training samples), set by epochs"


def test_an_empty_curriculum_under_a_limit_ends() -> None:
    assert build_schedule([Phase(0, (), 1.0)], 4, 0, max_steps=5) == []
    assert build_schedule([Phase(1, (), 1.0), Phase(2, (), 1.0)], 4, 0, max_samples=5) == []
