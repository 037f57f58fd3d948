"""MLflow: one MLflow run per tunescout run, in an experiment per group (a study's name).

Where runs go: ``MLFLOW_TRACKING_URI`` when set (a server, or any store URI), else the SQLite
file ``mlruns.db`` in the working directory (``mlflow ui --backend-store-uri
sqlite:///mlruns.db`` shows it). The working directory rather than the run directory so that
every run and every trial of a study, each in its own run directory, lands in one store. The
environment variables the ``transformers`` integration honours mean the same here:
``MLFLOW_EXPERIMENT_NAME`` (overrides the group), ``MLFLOW_RUN_ID`` (log into that existing
run), ``MLFLOW_TAGS`` (JSON object of extra tags). SQLite serialises writers; a study with
several parallel workers is better served by a tracking server.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any, Mapping

from tunescout.track.base import RunInfo

__all__ = ["MlflowTracker", "default_tracking_uri"]

STATUS = {"completed": "FINISHED", "stopped": "FINISHED", "paused": "SCHEDULED", "diverged": "FAILED",
          "failed": "FAILED"}
"""tunescout's run status → MLflow's (``paused``: to be continued; the tag ``tunescout.status`` has ours)."""
_BAD = re.compile(r"[^\w/.\- :]")
CHUNK = 100  # MLflow's log_batch limit on params per call


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else ``sqlite:///<working dir>/mlruns.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlruns.db'}"


def _key(name: str) -> str:
    return _BAD.sub("_", name)  # MLflow keys: word characters, / . - space and colon only


class MlflowTracker:
    """The :class:`~tunescout.track.base.Tracker` for MLflow, through ``MlflowClient`` (no global active run)."""

    def start(self, run: RunInfo, previous: Mapping[str, Any]) -> dict[str, Any]:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI") or previous.get("tracking_uri") or default_tracking_uri()
        self.client = MlflowClient(tracking_uri=uri)
        self.last_step = run.start_step
        run_id = previous.get("run_id") or os.environ.get("MLFLOW_RUN_ID")
        if run_id:
            self.client.update_run(run_id, status="RUNNING")
        else:
            experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or run.group or "tunescout"
            tags = {**run.tags, **json.loads(os.environ.get("MLFLOW_TAGS") or "{}")}
            created = self.client.create_run(self._experiment_id(experiment), run_name=run.name,
                                             tags={k: str(v) for k, v in tags.items()})
            run_id = created.info.run_id
            params = [Param(_key(k), str(v)[:6000]) for k, v in run.params.items()]
            for i in range(0, len(params), CHUNK):
                self.client.log_batch(run_id, params=params[i:i + CHUNK])
        self.run_id = run_id
        return {"run_id": run_id, "tracking_uri": uri}

    def _experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # another trial created it in between
            return self.client.get_experiment_by_name(name).experiment_id

    def log(self, step: int, values: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(_key(k), v, now, step) for k, v in values.items()])
        self.last_step = step

    def finish(self, status: str, scores: Mapping[str, float]) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(_key(f"final/{k}"), v, now, self.last_step)
                                                    for k, v in scores.items()],
                              tags=[RunTag("tunescout.status", status)])
        self.client.set_terminated(self.run_id, status=STATUS.get(status, "FAILED"))
