"""Facts about a study that every layer reads, each defined once, with no heavy imports.

The analysis and report layers group and score trials by these; importing them from here keeps
those layers free of the spec loader (and of torch).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["COHORT", "DEFAULT_METRIC", "dataset_harness", "dataset_metric"]

COHORT = ("model", "dataset", "method")
"""Trials that differ only in hyperparameters (and seed) are compared with each other: the
cohort key of the driver, the stopping rules, their replays, the analysis and the report."""

DEFAULT_METRIC = "val_loss"
"""A dataset's metric when the study names none."""


def dataset_metric(dataset: Mapping[str, Any] | Any) -> str:
    """A dataset's metric name, from a ``DatasetSpec`` or the dict a store keeps of it.

    ``metric`` is a name (``accuracy``, ``f1``, ...; ``val_loss`` when absent) or a mapping of
    lm-evaluation-harness tasks, ``{harness: [arc_easy], key: acc}``, whose name is
    ``harness:arc_easy:acc`` (see :class:`tunescout.evaluate.harness.HarnessMetric`): the name
    its scores are stored, ranked and stopped on.

    Raises:
        ConfigError: a metric that is neither a known name nor a valid harness mapping (the
            message names the dataset).
    """
    harness = dataset_harness(dataset)
    if harness is not None:
        return harness.name
    metric = dataset.get("metric") if isinstance(dataset, Mapping) else getattr(dataset, "metric", None)
    if metric is not None and not isinstance(metric, str):
        from tunescout.config import ConfigError

        raise ConfigError(f"dataset {_name(dataset)!r}: `metric` must be a name (accuracy, exact_match, f1, rougeL, "
                          f"val_loss) or {{harness: [TASK, ...], key: acc}}, got {metric!r}")
    return metric or DEFAULT_METRIC


def _name(dataset: Mapping[str, Any] | Any) -> str:
    return dataset.get("name", "?") if isinstance(dataset, Mapping) else getattr(dataset, "name", "?")


def dataset_harness(dataset: Mapping[str, Any] | Any) -> Any:
    """The dataset's harness tasks as a ``HarnessMetric`` when its ``metric`` is a harness mapping, else None.

    Raises:
        ConfigError: the mapping is malformed (unknown key, no tasks, ...), naming the dataset.
    """
    metric = dataset.get("metric") if isinstance(dataset, Mapping) else getattr(dataset, "metric", None)
    if not isinstance(metric, Mapping):
        return None
    from tunescout.evaluate.harness import parse_harness_metric  # pure Python; lm-eval is imported only to run

    return parse_harness_metric(metric, where=f"dataset {_name(dataset)!r}: metric")
