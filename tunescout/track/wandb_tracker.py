"""Weights & Biases: one W&B run per tunescout run, grouped by a study's name.

The W&B variables mean what they always do: ``WANDB_PROJECT`` (default ``tunescout``),
``WANDB_MODE=offline`` (nothing leaves the machine; ``wandb sync`` later), ``WANDB_DIR``
(default: the run directory, so its files sit with the run), ``WANDB_RUN_GROUP`` (when no
study sets the group), ``WANDB_ENTITY``, ``WANDB_API_KEY``, ``WANDB_RUN_ID`` (log into that run;
ignored, with a warning, for a study's trials, which each need a run of their own).

A resumed run continues the same W&B run (its id is kept in the run directory's
``trackers.json``) by *rewinding* it to the checkpoint's step, ``wandb.init(resume_from=
"<id>?_step=<start_step>")``: W&B truncates the run's history after that step and takes the
redone steps as this attempt logs them, so each step is there once, with the values of the
attempt that finished. A plain ``resume="allow"`` would not do: W&B ignores steps at or below
the run's current step, so the redone steps would keep the values of the attempt whose weights
were thrown away. Offline (``WANDB_MODE=offline``) the rewind is recorded in the new segment's
run record (its ``branch_point``) and applied by the server when the run is synced. Rewind is
a preview feature that not every server offers; where ``wandb.init`` refuses it, the run is
resumed with ``resume="allow"``, with a warning that its redone steps keep their first values.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any, Mapping

from tunescout.track.base import RunInfo, env_run_id

__all__ = ["WandbTracker"]

OK = ("completed", "stopped", "paused")
log = logging.getLogger("tunescout.track")


class WandbTracker:
    """The :class:`~tunescout.track.base.Tracker` for W&B."""

    def start(self, run: RunInfo, previous: Mapping[str, Any]) -> dict[str, Any]:
        import wandb

        group = run.group or os.environ.get("WANDB_RUN_GROUP")
        settings = dict(project=os.environ.get("WANDB_PROJECT") or "tunescout", name=run.name, group=group,
                        dir=os.environ.get("WANDB_DIR") or str(run.run_dir),
                        config={**run.config, "tunescout": dict(run.tags)}, reinit="finish_previous")
        earlier = previous.get("id")
        if earlier and run.start_step:
            try:  # the id too, so that a WANDB_RUN_ID in the environment cannot contradict it
                self.run = wandb.init(id=earlier, resume_from=f"{earlier}?_step={run.start_step}", **settings)
                return {"id": self.run.id}
            except wandb.errors.Error as exc:
                log.warning("W&B refused to rewind run %s to step %d (%s); resuming it instead, where the "
                            "steps redone after the checkpoint keep the values first logged", earlier,
                            run.start_step, exc)
            self.run = wandb.init(id=earlier, resume="allow", **settings)
            return {"id": self.run.id}
        # An id of our own where a study's trial must not take the environment's (wandb reads it too).
        run_id = earlier or env_run_id("WANDB_RUN_ID", run) or (uuid.uuid4().hex[:12] if run.group else None)
        self.run = wandb.init(id=run_id, resume="allow", **settings)
        return {"id": self.run.id}

    def log(self, step: int, values: Mapping[str, float]) -> None:
        self.run.log(dict(values), step=step)

    def finish(self, status: str, scores: Mapping[str, float]) -> None:
        self.run.summary.update({**{f"final/{k}": v for k, v in scores.items()}, "status": status})
        self.run.finish(exit_code=0 if status in OK else 1)
