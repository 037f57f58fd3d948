"""A real run's length follows Hugging Face: ``max_steps`` beyond the data cycles it, and says so."""

from __future__ import annotations

import logging
import math

import pytest

from tunescout.config import DataSource, TrainConfig
from tunescout.demo.tasks import make_rows, write_jsonl
from tunescout.train import read_telemetry, train


def test_max_steps_beyond_one_pass_trains_every_step_and_logs_why(tiny_model_dir, tmp_path, caplog) -> None:
    data = write_jsonl(make_rows("arithmetic", 16, seed=0), tmp_path / "a.jsonl")  # 4 batches of 4
    cfg = TrainConfig.of(model=str(tiny_model_dir), data=[DataSource(str(data))], batch_size=4, max_steps=8,
                      max_tokens_per_micro_batch=256, max_length=128, learning_rate=1e-3, schedule="linear",
                      warmup_ratio=0.25, output_dir=str(tmp_path / "run"), progress=False, save_model=False)
    with caplog.at_level(logging.INFO, logger="tunescout"):
        result = train(cfg)
    assert result.status == "completed" and result.steps == result.total_steps == 8  # not 4
    records = read_telemetry(tmp_path / "run" / "telemetry.jsonl")
    assert [r["samples"] for r in records] == [4 * k for k in range(1, 9)]
    warmup = math.ceil(8 * 0.25)
    assert [r["lr"] for r in records[:warmup]] == pytest.approx([1e-3 * (k + 1) / warmup for k in range(warmup)])
    assert any("8 steps, 32 samples (2.00 passes over 16 training samples), set by max_steps" in r.getMessage()
               for r in caplog.records)
