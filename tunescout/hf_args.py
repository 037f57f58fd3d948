"""Hugging Face ``TrainingArguments`` names in a train config, mapped onto tunescout's keys.

People arrive with configs written for transformers, TRL or Axolotl. Where a setting means the
same thing here its transformers name is accepted (``num_train_epochs`` for ``epochs``), and
converted where the convention differs (``max_grad_norm: 0`` disables clipping, tunescout writes
``grad_clip: null``). Where it would mean something else it is refused with the tunescout
equivalent computed: the per-device batch and accumulation count are replaced by one effective
batch in samples, so those two names never load silently into a different batch.

Each mapping (the YAML, the overrides) is resolved on its own, before they are merged: an
override may replace a YAML key under the other name, but one mapping that gives both names is
a contradiction and fails, naming both.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from tunescout.settings import ConfigError, as_number

__all__ = ["HF_NAMES", "HF_SCHEDULES", "resolve_hf_names"]

HF_NAMES = {
    "num_train_epochs": "epochs",
    "max_grad_norm": "grad_clip",
    "lr_scheduler_type": "schedule",
    "adam_beta1": "betas",
    "adam_beta2": "betas",
    "adam_epsilon": "eps",
}
"""Transformers' name → the tunescout key it sets."""

HF_SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant", "constant_with_warmup": "constant"}
"""``lr_scheduler_type`` values with a tunescout schedule of the same shape (``constant`` alone
only without warmup: transformers' ``constant`` ignores the warmup settings)."""

_HF_BATCH = ("per_device_train_batch_size", "gradient_accumulation_steps")
_HF_BATCH_DEFAULTS = {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1}


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}: expected a positive integer, got {value!r}")
    return value


def _batch_error(raw: Mapping[str, Any]) -> ConfigError:
    """The refusal of transformers' batch names, with the ``batch_size`` they amount to."""
    given = {k: _positive_int(k, raw[k]) if k in raw else _HF_BATCH_DEFAULTS[k] for k in _HF_BATCH}
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    total = given["per_device_train_batch_size"] * given["gradient_accumulation_steps"] * world
    names = " and ".join(f"`{k}`" for k in _HF_BATCH if k in raw)
    return ConfigError(
        f"{names}: not tunescout settings. tunescout takes the effective batch in samples per optimizer "
        "step (`batch_size`) and packs it into micro-batches of at most `max_tokens_per_micro_batch` "
        "tokens, accumulating as many as it needs, so the batch does not change with the device count "
        "or the memory. The equivalent of per_device_train_batch_size="
        f"{given['per_device_train_batch_size']} x gradient_accumulation_steps="
        f"{given['gradient_accumulation_steps']} x {world} process(es) is `batch_size: {total}`; "
        "the memory per micro-batch is set by `max_tokens_per_micro_batch`"
    )


def _schedule(raw: Mapping[str, Any]) -> str:
    value = raw["lr_scheduler_type"]
    if value not in HF_SCHEDULES:
        raise ConfigError(
            f"lr_scheduler_type: {value!r} has no tunescout schedule; accepted: {list(HF_SCHEDULES)} "
            "(tunescout's `schedule` is constant, linear or cosine, each with linear warmup)"
        )
    warmup = raw.get("warmup_steps") or raw.get("warmup_ratio")
    if value == "constant" and warmup:
        # transformers' `constant` is get_constant_schedule: it never warms up, whatever the
        # warmup settings say; loading it with warmup would train a different schedule.
        raise ConfigError(
            "lr_scheduler_type: `constant` has no warmup in transformers, but this config sets "
            "warmup_steps/warmup_ratio; use `constant_with_warmup` (or tunescout's `schedule: constant`)"
        )
    return HF_SCHEDULES[value]


def resolve_hf_names(raw: Mapping[str, Any], base: Mapping[str, Any] | None = None,
                     default_betas: tuple[float, float] = (0.9, 0.95)) -> dict[str, Any]:
    """``raw`` with transformers' ``TrainingArguments`` names replaced by tunescout's keys.

    ``num_train_epochs`` → ``epochs``; ``max_grad_norm`` → ``grad_clip`` (0 or less: no
    clipping, as in transformers); ``lr_scheduler_type`` → ``schedule`` (see
    :data:`HF_SCHEDULES`); ``adam_beta1``/``adam_beta2`` → ``betas`` (a beta not given keeps
    the ``betas`` of ``base``, the resolved mapping these override, else ``default_betas``,
    tunescout's default); ``adam_epsilon`` → ``eps``. Other keys pass unchanged.

    Raises:
        ConfigError: a name given with its tunescout key (both named), a value of the wrong type,
            an ``lr_scheduler_type`` without a tunescout equivalent, a fractional
            ``warmup_steps`` (transformers 5's ratio form), or ``per_device_train_batch_size`` /
            ``gradient_accumulation_steps`` (the message gives the ``batch_size`` they amount to).
    """
    if any(k in raw for k in _HF_BATCH):
        raise _batch_error(raw)
    steps = raw.get("warmup_steps")
    if isinstance(steps, float) and 0 < steps < 1:
        raise ConfigError(f"warmup_steps: {steps} reads as a ratio in transformers 5; tunescout's "
                          f"warmup_steps counts steps: use `warmup_ratio: {steps}`")
    out = {k: v for k, v in raw.items() if k not in HF_NAMES}
    for name, key in HF_NAMES.items():
        if name in raw and key in raw:
            raise ConfigError(f"`{name}` is transformers' name for `{key}`: give one of them, not both")
    if "num_train_epochs" in raw:
        out["epochs"] = as_number("num_train_epochs", raw["num_train_epochs"])
    if "max_grad_norm" in raw:
        value = raw["max_grad_norm"]
        clip = None if value is None else as_number("max_grad_norm", value)
        out["grad_clip"] = clip if clip is not None and clip > 0 else None
    if "lr_scheduler_type" in raw:
        out["schedule"] = _schedule(raw)
    if "adam_beta1" in raw or "adam_beta2" in raw:
        before = list((base or {}).get("betas") or default_betas)
        if len(before) != 2:
            raise ConfigError(f"betas: expected a list of 2 values, got {before!r}")
        out["betas"] = [as_number(name, raw[name]) if name in raw else old
                        for name, old in zip(("adam_beta1", "adam_beta2"), before)]
    if "adam_epsilon" in raw:
        out["eps"] = as_number("adam_epsilon", raw["adam_epsilon"])
    return out
