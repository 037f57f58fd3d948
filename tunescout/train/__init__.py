"""One training run: model loading, the loop, schedules, telemetry and checkpoints.

The names below load on first use (PEP 562), so light modules of this package (``identity``,
``rundir``) can be imported by the study layer without paying for torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["JsonlSink", "RunResult", "Sink", "StepRecord", "read_telemetry", "train"]

_HOME = {"RunResult": "loop", "train": "loop", "JsonlSink": "telemetry", "Sink": "telemetry",
         "StepRecord": "telemetry", "read_telemetry": "telemetry"}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"tunescout.train.{_HOME[name]}"), name)
    raise AttributeError(f"module 'tunescout.train' has no attribute {name!r}")
