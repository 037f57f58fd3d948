"""MLflow: one MLflow run per tunescout run, in an experiment per group (a study's name).

Where runs go: ``MLFLOW_TRACKING_URI`` when set (a server, or any store URI), else the SQLite
file ``mlruns.db`` in the working directory (``mlflow ui --backend-store-uri
sqlite:///mlruns.db`` shows it). The working directory rather than the run directory so that
every run and every trial of a study, each in its own run directory, lands in one store. The
environment variables the ``transformers`` integration honours mean the same here:
``MLFLOW_EXPERIMENT_NAME`` (overrides the group), ``MLFLOW_RUN_ID`` (log into that existing
run; ignored, with a warning, for a study's trials, which each need a run of their own),
``MLFLOW_TAGS`` (JSON object of extra tags).

Parallel trials share that SQLite file. MLflow creates and migrates its tables when a process
first opens a store, and two processes doing so at once on a new file fail (``table params
already exists``, ``duplicate column name``), which would end those trials at their start. So a
tracker opens an SQLite store under an exclusive ``flock`` on ``<file>.init-lock``, held only
for that first access; afterwards SQLite serialises the writers itself. Many workers are still
better served by a tracking server (SQLite writes one transaction at a time).

A resumed run is a new MLflow run. MLflow cannot delete or rewrite the points of a metric's
history (logging a step again adds a second point at that step), and a resumed run redoes the
steps after its checkpoint, on a GPU not always with the same numbers. Skipping the redone steps
would keep the values of an attempt whose weights were thrown away. So each attempt gets its own
run, which starts with the earlier run's history up to the checkpoint's step (copied, with its
timestamps) and then holds what this attempt logs: the run that finishes holds every step once,
with the values of the weights it ends with. The runs are linked by tags
(``tunescout.resumed_from`` on the new one, ``tunescout.superseded_by`` on the old one), and the
old one, when tunescout created it, is deleted (MLflow's soft delete: hidden from the experiment's
views, where it would be a second copy of the trial, and kept in the store, ``mlflow runs
restore`` brings it back). A run named by ``MLFLOW_RUN_ID`` is someone else's to keep: it is only tagged.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any, Mapping

from tunescout.track.base import RunInfo, env_run_id

__all__ = ["MlflowTracker", "default_tracking_uri"]

STATUS = {"completed": "FINISHED", "stopped": "FINISHED", "paused": "SCHEDULED", "diverged": "FAILED",
          "failed": "FAILED"}
"""tunescout's run status → MLflow's (``paused``: to be continued; the tag ``tunescout.status`` has ours)."""
_BAD = re.compile(r"[^\w/.\- :]")
CHUNK = 100  # MLflow's log_batch limit on params per call
METRIC_CHUNK = 1000  # ... and on metrics


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else ``sqlite:///<working dir>/mlruns.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlruns.db'}"


def _sqlite_file(uri: str) -> Path | None:
    """The file of an SQLAlchemy SQLite URI (``sqlite:///rel.db``, ``sqlite:////abs.db``); None for
    other stores and for an in-memory database."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _open_client(uri: str) -> Any:
    """An ``MlflowClient`` on ``uri``; an SQLite store is opened under ``<file>.init-lock`` (see the
    module docstring), other stores as they are."""
    from mlflow.tracking import MlflowClient

    from tunescout.locks import hold_lock

    file = _sqlite_file(uri)
    if file is None:
        return MlflowClient(tracking_uri=uri)
    file.parent.mkdir(parents=True, exist_ok=True)
    with hold_lock(f"{file}.init-lock", busy=None):
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # opens the store: creates or migrates its tables
    return client


def _key(name: str) -> str:
    return _BAD.sub("_", name)  # MLflow keys: word characters, / . - space and colon only


class MlflowTracker:
    """The :class:`~tunescout.track.base.Tracker` for MLflow, through ``MlflowClient`` (no global active run)."""

    def start(self, run: RunInfo, previous: Mapping[str, Any]) -> dict[str, Any]:
        from mlflow.entities import Param

        uri = os.environ.get("MLFLOW_TRACKING_URI") or previous.get("tracking_uri") or default_tracking_uri()
        self.client = _open_client(uri)
        self.last_step = run.start_step
        earlier = previous.get("run_id")
        given = None if earlier else env_run_id("MLFLOW_RUN_ID", run)
        if given:  # a fresh start into the run the environment names
            self.client.update_run(given, status="RUNNING")
            self.run_id = given
            return {"run_id": given, "tracking_uri": uri, "created": False}
        tags = {**run.tags, **json.loads(os.environ.get("MLFLOW_TAGS") or "{}")}
        if earlier:
            old = self.client.get_run(earlier)
            experiment_id = old.info.experiment_id
            tags["tunescout.resumed_from"] = earlier
        else:
            experiment_id = self._experiment_id(os.environ.get("MLFLOW_EXPERIMENT_NAME") or run.group or "tunescout")
        created = self.client.create_run(experiment_id, run_name=run.name, tags={k: str(v) for k, v in tags.items()})
        self.run_id = created.info.run_id
        params = [Param(_key(k), str(v)[:6000]) for k, v in run.params.items()]
        for i in range(0, len(params), CHUNK):
            self.client.log_batch(self.run_id, params=params[i:i + CHUNK])
        if earlier:
            self._carry_over(old, run.start_step)
            self.client.set_tag(earlier, "tunescout.superseded_by", self.run_id)
            if previous.get("created"):  # a record without it may name a run given by MLFLOW_RUN_ID
                self.client.delete_run(earlier)
        return {"run_id": self.run_id, "tracking_uri": uri, "created": True}

    def _carry_over(self, old: Any, upto: int) -> None:
        """Copy ``old``'s step history up to step ``upto`` (the checkpoint's) into this run."""
        from mlflow.entities import Metric

        points = [Metric(m.key, m.value, m.timestamp, m.step)
                  for key in old.data.metrics if not key.startswith("final/")
                  for m in self.client.get_metric_history(old.info.run_id, key) if m.step <= upto]
        for i in range(0, len(points), METRIC_CHUNK):
            self.client.log_batch(self.run_id, metrics=points[i:i + METRIC_CHUNK])

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
