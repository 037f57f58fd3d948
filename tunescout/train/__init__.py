"""One training run: model loading, the loop, schedules, telemetry and checkpoints."""

from tunescout.train.loop import RunResult, train
from tunescout.train.telemetry import JsonlSink, Sink, StepRecord, read_telemetry

__all__ = ["JsonlSink", "RunResult", "Sink", "StepRecord", "read_telemetry", "train"]
