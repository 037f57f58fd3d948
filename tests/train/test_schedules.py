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


@pytest.mark.parametrize("ours, theirs", [("linear", "linear"), ("cosine", "cosine"),
                                          ("constant", "constant_with_warmup")])
@pytest.mark.parametrize("warmup", [0, 1, 5])
def test_factors_against_transformers(ours: str, theirs: str, warmup: int) -> None:
    """The documented difference from transformers, and only it: warmup runs one step ahead
    (their step 0 trains at a learning rate of 0, ours at 1/warmup, so both reach the peak and
    ours gets there one step sooner); every step after the warmup has transformers' factor."""
    import torch
    from transformers.optimization import get_scheduler

    total = 20
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    hf = get_scheduler(theirs, optimizer, num_warmup_steps=warmup, num_training_steps=total)
    theirs_lr = []
    for _ in range(total + 1):  # the LR each optimizer step trains at, as Trainer steps it
        theirs_lr.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        hf.step()
    for step in range(total):
        expected = theirs_lr[step + 1] if step < warmup else theirs_lr[step]
        assert lr_factor(step, ours, warmup, total) == pytest.approx(expected, abs=1e-12), step
    if warmup:
        assert theirs_lr[0] == 0.0 and lr_factor(0, ours, warmup, total) == pytest.approx(1 / warmup)


def test_warmup_ratio_rounds_up_as_transformers() -> None:
    import math

    from transformers import TrainingArguments

    from tunescout.config import TrainConfig

    hf = TrainingArguments(output_dir="unused", warmup_steps=0.1, report_to=[])  # transformers 5: < 1 is a ratio
    for total in (1, 9, 10, 95, 101):
        assert TrainConfig.of(warmup_ratio=0.1).optim.warmup_for(total) == hf.get_warmup_steps(total) == math.ceil(total * 0.1)
    assert TrainConfig.of(warmup_steps=7).optim.warmup_for(1000) == 7
