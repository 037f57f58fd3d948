"""TensorBoard: event files in the run directory's ``tensorboard/`` folder.

``tensorboard --logdir RUN_DIR`` shows one run; ``--logdir`` a study's runs folder shows every
trial side by side, named by trial id, with their configurations in the HParams tab.
``TENSORBOARD_LOGGING_DIR`` (honoured by ``transformers`` too) puts them under
``$TENSORBOARD_LOGGING_DIR/<run name>`` instead. Every start purges the events past the step
it continues from (none for a fresh start), so steps redone after a resume or a restart are not
drawn twice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from tunescout.track.base import RunInfo

__all__ = ["TensorBoardTracker", "log_dir"]


def log_dir(run: RunInfo) -> Path:
    """Where the run's event files go."""
    base = os.environ.get("TENSORBOARD_LOGGING_DIR")
    return Path(os.path.expanduser(base)) / run.name if base else run.run_dir / "tensorboard"


class TensorBoardTracker:
    """The :class:`~tunescout.track.base.Tracker` for TensorBoard (``torch.utils.tensorboard``)."""

    def start(self, run: RunInfo, previous: Mapping[str, Any]) -> dict[str, Any]:
        from torch.utils.tensorboard import SummaryWriter

        folder = log_dir(run)
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=run.start_step + 1)
        self.params = dict(run.params)
        self.last_step = run.start_step
        if not run.start_step:
            self.writer.add_text("config", "```\n" + json.dumps(dict(run.config), indent=2, default=str) + "\n```")
        return {"log_dir": str(folder)}

    def log(self, step: int, values: Mapping[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.last_step = step

    def finish(self, status: str, scores: Mapping[str, float]) -> None:
        for key, value in scores.items():
            self.writer.add_scalar(f"final/{key}", value, self.last_step)
        self.writer.add_text("status", status, self.last_step)
        # The HParams tab: this run's configuration against its final scores, in the same folder.
        self.writer.add_hparams({**self.params, "status": status}, {f"hparam/{k}": v for k, v in scores.items()},
                                run_name=".", global_step=self.last_step)
        self.writer.close()
