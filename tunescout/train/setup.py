"""What a run settles before it trains: what ``auto`` resolves to here, the packing budget, and
whether the run directory may hold this run (and the checkpoint it continues from).

These are decided once per run, on rank 0 when there are several, and recorded in ``run.json``:
a resume that would decide differently is refused, so a resumed run is the run it continues.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from tunescout.config import ConfigError, TrainConfig
from tunescout.train.checkpoint import latest_checkpoint
from tunescout.train.distributed.ranks import check_world_size
from tunescout.train.identity import check_resume, record_run, run_identity
from tunescout.train.models import resolve_attn_implementation, resolve_device, resolve_dtype
from tunescout.train.rundir import clear_run, holds_run

__all__ = ["CPU_MICRO_BATCH_TOKENS", "Numerics", "packing_shape", "prepare_run_dir", "resolve_numerics"]

log = logging.getLogger("tunescout.train")


@dataclass(frozen=True)
class Numerics:
    """What ``auto`` settings resolve to on this machine: resolved once, recorded in ``run.json``
    (a resume that resolves differently is refused) and used by the run."""

    device: torch.device
    dtype: torch.dtype
    attn: str
    row_tokens: int | None
    budget: int
    world_size: int = 1
    """Processes training the run (torchrun); recorded only above 1, so single-process records are unchanged."""

    def record(self) -> dict[str, Any]:
        return {"device": self.device.type, "dtype": str(self.dtype).removeprefix("torch."),
                "attn_implementation": self.attn, "max_tokens_per_row": self.row_tokens,
                "packing": "fixed" if self.row_tokens is not None else "cost-model",
                "max_tokens_per_micro_batch": self.budget,
                # the fused AdamW of a GPU (accel.adamw_kwargs) rounds differently from the CPU's
                **({"optimizer": "adamw-fused"} if self.device.type == "cuda" else {}),
                **({"world_size": self.world_size} if self.world_size > 1 else {})}


def resolve_numerics(config: TrainConfig, world_size: int = 1) -> Numerics:
    device = resolve_device(config.numerics.device)
    dtype = resolve_dtype(config.numerics.dtype, device)
    attn = resolve_attn_implementation(config.numerics.attn_implementation, device, dtype, config.model,
                                       trust_remote_code=config.trust_remote_code)
    return Numerics(device, dtype, attn, *packing_shape(config, attn, device), world_size=world_size)


def prepare_run_dir(run_dir: Path, config: TrainConfig, numerics: Numerics, resume: bool,
                     restart: bool) -> Path | None:
    """Check the directory may hold this run, record its config, and return the checkpoint to resume.

    A directory that already holds a run is never overwritten silently: it is continued
    (``resume``, only with the same identity) or explicitly started over (``restart``).
    """
    identity = run_identity(config)
    resolved = numerics.record()
    if restart:
        clear_run(run_dir)
    elif resume:
        check_world_size(run_dir, numerics.world_size)  # first: its error says more than the resolved diff
        check_resume(run_dir, identity, resolved)
    elif holds_run(run_dir):
        raise ConfigError(f"{run_dir} already holds a run: --resume continues it (same config only), "
                          "--restart starts it over, or choose another output_dir")
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if not checkpoint:
        if resume and holds_run(run_dir):
            log.info("no checkpoint in %s; starting from scratch", run_dir)
        clear_run(run_dir)  # same config and nothing to continue from: a fresh start
    record_run(run_dir, identity, resolved)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    return checkpoint


CPU_MICRO_BATCH_TOKENS = 1024


def packing_shape(config: TrainConfig, attn: str, device: torch.device) -> tuple[int | None, int]:
    """(fixed longest row, or None for the cost model's plan; micro-batch budget).

    The budget is the user's memory bound. A CPU gains nothing from large micro-batches once the
    per-forward overhead is paid, so there it is cut to about ``CPU_MICRO_BATCH_TOKENS`` (or one
    row of ``max_length`` if longer). The rows within it are the cost model's choice per batch
    (:mod:`tunescout.train.stepcost`). Setting ``max_tokens_per_row`` turns all of this off:
    rows packed up to it and the budget as given.
    """
    budget = config.batch.max_tokens_per_micro_batch
    if config.batch.max_tokens_per_row is not None:
        return config.batch.max_tokens_per_row, budget
    if device.type == "cpu":
        budget = min(budget, max(config.processing.max_length, CPU_MICRO_BATCH_TOKENS))
    return None, budget
