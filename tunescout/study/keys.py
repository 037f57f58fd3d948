"""Facts about a study that every layer reads, each defined once, with no heavy imports.

The analysis and report layers group and score trials by these; importing them from here keeps
those layers free of the spec loader (and of torch).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["COHORT", "DEFAULT_METRIC", "dataset_metric"]

COHORT = ("model", "dataset", "method")
"""Trials that differ only in hyperparameters (and seed) are compared with each other: the
cohort key of the driver, the stopping rules, their replays, the analysis and the report."""

DEFAULT_METRIC = "val_loss"
"""A dataset's metric when the study names none."""


def dataset_metric(dataset: Mapping[str, Any] | Any) -> str:
    """A dataset's metric, from a ``DatasetSpec`` or the dict a store keeps of it."""
    metric = dataset.get("metric") if isinstance(dataset, Mapping) else getattr(dataset, "metric", None)
    return metric or DEFAULT_METRIC
