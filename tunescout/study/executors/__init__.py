"""Executors run trials and hand their messages back to the driver.

The interface is small so that every executor drives the same stopping rules and the same
store: ``submit`` a trial's payload, read its events (a step record; a record the rule judges,
which needs a ``reply``; the trial's end), ``cancel``, ``shutdown``. The driver stays the
store's single writer whatever runs the trials. ``EXECUTORS`` names the implementations a study
or the CLI can choose (``executor: {name: ray, ...}``); each takes the same options
(:data:`OPTIONS`) and refuses the ones it cannot honour.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from tunescout.study.executors.base import Executor, ExecutorOptions, ranks_per_trial

__all__ = ["DEFAULTS", "EXECUTORS", "OPTIONS", "Executor", "ExecutorOptions", "build_executor", "ranks_per_trial",
           "validate_executor"]


OPTIONS: dict[str, Callable[[Any], bool]] = {
    "name": lambda v: isinstance(v, str),
    "address": lambda v: v is None or isinstance(v, str),
    "workers": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
    "gpus_per_trial": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
    and (v <= 1 or float(v).is_integer()),
    "cpus_per_trial": lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0),
    "max_retries": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
}
"""Every executor option and what a valid value is. ``gpus_per_trial`` above 1 (whole GPUs)
trains each trial on that many processes (FSDP2); a fraction shares a GPU between trials."""
DEFAULTS: dict[str, Any] = dataclasses.asdict(ExecutorOptions())


def _local(options: ExecutorOptions) -> Executor:
    from tunescout.study.executors.local import LocalExecutor

    gpus = options.gpus_per_trial
    if gpus and not float(gpus).is_integer():
        raise ValueError(f"executor.gpus_per_trial: {gpus} GPUs per trial; sharing a GPU between trials needs "
                         "the ray executor (the local one gives each trial whole GPUs)")
    cpus = options.cpus_per_trial
    return LocalExecutor(slots=options.workers, threads=max(1, int(cpus)) if cpus else None,
                         ranks=ranks_per_trial(options))


def _ray(options: ExecutorOptions) -> Executor:
    from tunescout.study.executors.ray_cluster import RayExecutor

    return RayExecutor(options)


EXECUTORS: dict[str, Callable[[ExecutorOptions], Executor]] = {"local": _local, "ray": _ray}
"""Executor factories by name; each takes the validated options."""


def validate_executor(options: Mapping[str, Any] | ExecutorOptions | None,
                      where: str = "executor") -> ExecutorOptions:
    """The options with defaults filled in; a ValueError naming the bad key otherwise."""
    if options is None:
        options = {}
    if isinstance(options, ExecutorOptions):
        options = dataclasses.asdict(options)
    if not isinstance(options, Mapping):
        raise ValueError(f"{where}: expected a mapping like {{name: ray, address: auto}}, got {options!r}")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
    merged = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None or k == "address"}}
    for key, ok in OPTIONS.items():
        if not ok(merged[key]):
            raise ValueError(f"{where}.{key}: invalid value {merged[key]!r}")
    if merged["name"] not in EXECUTORS:
        raise ValueError(f"{where}.name: unknown executor {merged['name']!r}; known: {', '.join(EXECUTORS)}")
    if merged["name"] == "local" and merged["address"] is not None:
        raise ValueError(f"{where}.address: only the ray executor connects to an address")
    return ExecutorOptions(**merged)


def build_executor(options: ExecutorOptions | Mapping[str, Any] | None) -> Executor:
    """An executor from its options (a mapping is validated first; typed options already were)."""
    typed = options if isinstance(options, ExecutorOptions) else validate_executor(options)
    return EXECUTORS[typed.name](typed)
