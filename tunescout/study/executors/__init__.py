"""Executors run trials and hand their messages back to the driver.

The interface is small so that every executor drives the same stopping rules and the same
store: ``submit`` a trial, read :class:`Event`\\ s (a step record; a record the rule judges,
which needs a ``reply``; the trial's end), ``cancel``, ``shutdown``. The driver stays the
store's single writer whatever runs the trials. ``EXECUTORS`` names the implementations a study
or the CLI can choose (``executor: {name: ray, ...}``); each takes the same options
(:data:`OPTIONS`) and refuses the ones it cannot honour.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from tunescout.study.executors.base import Event, Executor, ranks_per_trial

__all__ = ["DEFAULTS", "EXECUTORS", "OPTIONS", "Event", "Executor", "build_executor", "ranks_per_trial",
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
DEFAULTS: dict[str, Any] = {"name": "local", "address": None, "workers": None, "gpus_per_trial": 0,
                            "cpus_per_trial": None, "max_retries": 1}


def _local(options: Mapping[str, Any]) -> Executor:
    from tunescout.study.executors.local import LocalExecutor

    gpus = options.get("gpus_per_trial") or 0
    if gpus and not float(gpus).is_integer():
        raise ValueError(f"executor.gpus_per_trial: {gpus} GPUs per trial; sharing a GPU between trials needs "
                         "the ray executor (the local one gives each trial whole GPUs)")
    cpus = options.get("cpus_per_trial")
    return LocalExecutor(slots=options.get("workers"), threads=max(1, int(cpus)) if cpus else None,
                         ranks=ranks_per_trial(options))


def _ray(options: Mapping[str, Any]) -> Executor:
    from tunescout.study.executors.ray_cluster import RayExecutor

    return RayExecutor(options)


EXECUTORS: dict[str, Callable[[Mapping[str, Any]], Executor]] = {"local": _local, "ray": _ray}
"""Executor factories by name; each takes the validated options."""


def validate_executor(options: Mapping[str, Any] | None, where: str = "executor") -> dict[str, Any]:
    """The options with defaults filled in; a ValueError naming the bad key otherwise."""
    if options is None:
        options = {}
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
    return merged


def build_executor(options: Mapping[str, Any] | None) -> Executor:
    """An executor from (unvalidated) options."""
    merged = validate_executor(options)
    return EXECUTORS[merged["name"]](merged)
