"""Weights & Biases: one W&B run per tunescout run, grouped by a study's name.

The W&B variables mean what they always do: ``WANDB_PROJECT`` (default ``tunescout``),
``WANDB_MODE=offline`` (nothing leaves the machine; ``wandb sync`` later), ``WANDB_DIR``
(default: the run directory, so its files sit with the run), ``WANDB_RUN_GROUP`` (when no
study sets the group), ``WANDB_ENTITY``, ``WANDB_API_KEY``. A resumed run continues the same W&B
run (its id is kept in the run directory's ``trackers.json``).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from tunescout.track.base import RunInfo

__all__ = ["WandbTracker"]

OK = ("completed", "stopped", "paused")


class WandbTracker:
    """The :class:`~tunescout.track.base.Tracker` for W&B."""

    def start(self, run: RunInfo, previous: Mapping[str, Any]) -> dict[str, Any]:
        import wandb

        group = run.group or os.environ.get("WANDB_RUN_GROUP")
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "tunescout", name=run.name, group=group,
            id=previous.get("id") or os.environ.get("WANDB_RUN_ID") or None, resume="allow",
            dir=os.environ.get("WANDB_DIR") or str(run.run_dir), config={**run.config, "tunescout": dict(run.tags)},
            reinit="finish_previous",
        )
        return {"id": self.run.id}

    def log(self, step: int, values: Mapping[str, float]) -> None:
        self.run.log(dict(values), step=step)

    def finish(self, status: str, scores: Mapping[str, float]) -> None:
        self.run.summary.update({**{f"final/{k}": v for k, v in scores.items()}, "status": status})
        self.run.finish(exit_code=0 if status in OK else 1)
