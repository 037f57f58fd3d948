from __future__ import annotations

import math

import pytest

from tunescout.train.schedules import lr_factor


@pytest.mark.parametrize(
    ("schedule", "warmup", "step", "expected"),
    [
        ("constant", 0, 0, 1.0),
        ("constant", 0, 99, 1.0),
        ("constant", 4, 0, 0.25),
        ("constant", 4, 3, 1.0),
        ("constant", 4, 50, 1.0),
        ("linear", 0, 0, 1.0),
        ("linear", 0, 50, 0.5),
        ("linear", 0, 99, 0.01),
        ("linear", 10, 10, 1.0),
        ("linear", 10, 55, 0.5),
        ("cosine", 0, 0, 1.0),
        ("cosine", 0, 50, 0.5),
        ("cosine", 0, 25, 0.5 * (1 + math.cos(math.pi * 0.25))),
        ("cosine", 10, 5, 0.6),
        ("cosine", 10, 100, 0.0),
    ],
)
def test_lr_factor_values(schedule: str, warmup: int, step: int, expected: float) -> None:
    assert lr_factor(step, schedule, warmup, total_steps=100) == pytest.approx(expected)


def test_decay_never_reaches_zero_within_the_run() -> None:
    for schedule in ("linear", "cosine"):
        assert lr_factor(99, schedule, 0, 100) > 0


def test_unknown_schedule() -> None:
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor(0, "step", 0, 10)
