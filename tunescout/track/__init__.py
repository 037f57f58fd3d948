"""Experiment trackers (extra ``track``): MLflow, TensorBoard and W&B mirror a run's step
records, config, status and final scores. Chosen with ``track: [mlflow, tensorboard]`` in a run
config or a study's ``fixed``; the contract is in :mod:`tunescout.track.base`.

Importing this package imports none of the backends.
"""

from tunescout.track.base import (
    TRACK_INSTALL,
    TRACKERS,
    RunInfo,
    Tracker,
    TrackerEntry,
    TrackerSink,
    check_trackers,
    final_scores,
    open_trackers,
    register_tracker,
    run_params,
    step_values,
)

__all__ = ["TRACKERS", "TRACK_INSTALL", "RunInfo", "Tracker", "TrackerEntry", "TrackerSink", "check_trackers",
           "final_scores", "open_trackers", "register_tracker", "run_params", "step_values"]
