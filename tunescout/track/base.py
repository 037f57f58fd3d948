"""The tracker contract, the registry of trackers, and the sink that feeds them step records.

A tracker mirrors one training run into an experiment-tracking backend (MLflow, TensorBoard,
W&B). It is deliberately small, three calls, in this order:

1. ``start(run, previous)`` once, before the first step: open the backend's run, record the
   config as params and the tags. ``previous`` is what an earlier ``start`` of the *same run
   directory* returned (kept in ``trackers.json`` there), so a resumed run continues its tracker
   run instead of opening a second one. Returns what to keep for that (ids), or ``{}``.
   A resumed run (``run.start_step > 0``) redoes the steps its earlier attempt made after the
   checkpoint, not always bit-identically (GPU kernels): ``start`` must see to it that the
   backend ends up with each step once, holding the value the attempt that finishes logs, so
   whatever it holds past ``start_step`` is dropped or rewritten (each tracker's docstring says how).
2. ``log(step, values)`` once per optimizer step, in step order, with the step's numbers (see
   :func:`step_values`). After a resume, steps start again after the checkpoint's step.
3. ``finish(status, scores)`` once at the end, whatever happened (failed runs too): the run's
   status (``completed``, ``stopped``, ``diverged``, ``failed``, ``paused``) and its final scores
   (``val_loss``, the task metric, ``final_loss``).

Packages are imported in ``start`` only; whether they are installed is checked when the config
is built (:func:`check_trackers`), so a missing one fails before training, with the install
hint. A backend error *during* training is logged and that tracker is dropped: tracking must
never end a run that is training fine. A tracker that fails to *start* ends the run before
it trains, and those started before it are finished as ``failed`` first (no run left RUNNING).
``tests/track/test_tracker_contract.py`` runs one suite over every registered tracker.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

from tunescout.settings import ConfigError, did_you_mean, flatten_dotted

__all__ = ["TRACKERS", "TRACK_INSTALL", "RunInfo", "Tracker", "TrackerEntry", "TrackerSink", "check_trackers",
           "env_run_id", "final_scores", "open_trackers", "register_tracker", "run_params", "step_values"]

log = logging.getLogger("tunescout.track")

TRACK_INSTALL = "pip install 'tunescout[track]'"
STATE_FILE = "trackers.json"
"""In the run directory: what each tracker's ``start`` returned, for a resume to reattach."""


@dataclass(frozen=True)
class RunInfo:
    """What a tracker is told about the run it mirrors."""

    name: str
    """The run's name: its directory's name (a study trial's id)."""
    run_dir: Path
    group: str | None = None
    """Runs that belong together: a study's name (MLflow experiment, W&B group)."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """The config, flattened to dotted keys with scalar values (``lora.r``, ``learning_rate``)."""
    config: Mapping[str, Any] = field(default_factory=dict)
    """The config as nested as it is written (backends that keep nested configs, W&B)."""
    tags: Mapping[str, str] = field(default_factory=dict)
    start_step: int = 0
    """Steps already done (a resumed run): the first ``log`` is for ``start_step + 1``."""


def env_run_id(var: str, run: RunInfo) -> str | None:
    """The tracker run id the environment names (``MLFLOW_RUN_ID``, ``WANDB_RUN_ID``): log into that run.

    Not for a run in a group (a study's trial): one id for the whole environment would put every
    trial into the same tracker run, so there it is ignored, with a warning, and each trial gets
    a run of its own.
    """
    value = os.environ.get(var) or None
    if value and run.group:
        log.warning("%s is ignored for %s: it is one of the runs of %r, and each gets a tracker run of its own",
                    var, run.name, run.group)
        return None
    return value


class Tracker(Protocol):
    """One run in one backend; see the module docstring for the contract."""

    def start(self, run: RunInfo, previous: Mapping[str, Any]) -> dict[str, Any]: ...

    def log(self, step: int, values: Mapping[str, float]) -> None: ...

    def finish(self, status: str, scores: Mapping[str, float]) -> None: ...


@dataclass(frozen=True)
class TrackerEntry:
    """A registered tracker: its name in ``track: [...]``, the packages it needs, how to make one."""

    name: str
    modules: tuple[str, ...]
    """Top-level packages that must be importable (checked without importing them)."""
    factory: str
    """``module:Class`` of the implementation, imported only when a run uses it."""

    def create(self) -> Tracker:
        module, cls = self.factory.split(":")
        return getattr(importlib.import_module(module), cls)()


TRACKERS: dict[str, TrackerEntry] = {}
"""Every tracker by name. Add one with :func:`register_tracker`."""


def register_tracker(entry: TrackerEntry) -> TrackerEntry:
    """Add ``entry`` to :data:`TRACKERS`.

    Raises:
        ValueError: the name is taken, is not a lowercase word, or the factory is not ``module:Class``.
    """
    if not entry.name.isidentifier() or entry.name != entry.name.lower():
        raise ValueError(f"tracker name {entry.name!r} must be a lowercase identifier")
    if entry.name in TRACKERS and TRACKERS[entry.name] != entry:
        raise ValueError(f"tracker {entry.name!r} is already registered to {TRACKERS[entry.name].factory}")
    if entry.factory.count(":") != 1:
        raise ValueError(f"tracker {entry.name!r}: factory must be 'module:Class', got {entry.factory!r}")
    TRACKERS[entry.name] = entry
    return entry


def check_trackers(names: Sequence[str]) -> None:
    """Check that every name is a tracker and its packages are installed, without importing them.

    Raises:
        ConfigError: an unknown name (with the closest one) or a missing package (with the install hint).
    """
    seen = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"track: {name!r} is listed twice")
        seen.add(name)
        entry = TRACKERS.get(name)
        if entry is None:
            raise ConfigError(f"track: unknown tracker {name!r}{did_you_mean(name, sorted(TRACKERS))} "
                              f"(known: {', '.join(sorted(TRACKERS))})")
        missing = [m for m in entry.modules if importlib.util.find_spec(m) is None]
        if missing:
            raise ConfigError(f"track: {name} needs {', '.join(missing)}, which is not installed: {TRACK_INSTALL}")


def _scalar(value: Any) -> str | int | float | bool:
    if isinstance(value, (bool, int, float, str)):
        return value
    if value is None:
        return "null"
    return json.dumps(value, default=str)


def run_params(config: Mapping[str, Any]) -> dict[str, str | int | float | bool]:
    """A config as tracker params: dotted keys, scalar values (lists and nulls as JSON text),
    data entries by path (``data: "a.jsonl,b.jsonl"``)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key in ("data", "eval_data") and isinstance(value, list):
            flat[key] = ",".join(str(d.get("path") if isinstance(d, Mapping) else d) for d in value)
        elif isinstance(value, Mapping):
            flat.update(flatten_dotted(value, f"{key}."))
        else:
            flat[key] = value
    return {k: _scalar(v) for k, v in flat.items()}


STEP_FIELDS = {"loss": "train/loss", "grad_norm": "train/grad_norm", "lr": "train/lr",
               "tokens_per_s": "train/tokens_per_s", "samples": "train/samples", "tokens": "train/tokens",
               "epoch": "train/epoch", "loss_tokens": "train/loss_tokens", "pad_tokens": "train/pad_tokens",
               "val_loss": "eval/val_loss"}
"""Record fields under the names trackers show (numeric fields added later, such as ``mfu``, go
under ``train/``)."""
SKIP_FIELDS = ("step", "phase", "micro_batches", "wall_s", "metrics")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def step_values(record: Any) -> dict[str, float]:
    """The numbers of a step record as ``{"train/loss": ..., "eval/val_loss": ..., "eval/<metric>": ...}``;
    missing and non-finite values are left out."""
    data = dataclasses.asdict(record) if dataclasses.is_dataclass(record) else dict(record)
    out = {}
    for key, value in data.items():
        if key in SKIP_FIELDS or not _finite(value):
            continue
        out[STEP_FIELDS.get(key, f"train/{key}")] = float(value)
    for key, value in (data.get("metrics") or {}).items():
        if _finite(value):
            out[f"eval/{key}"] = float(value)
    return out


def final_scores(outcome: Any) -> dict[str, float]:
    """``val_loss``, task metrics and ``final_loss`` of a finished run (a ``RunResult``), finite ones only."""
    scores = {"val_loss": getattr(outcome, "eval_loss", None), **(getattr(outcome, "metrics", None) or {}),
              "final_loss": getattr(outcome, "final_loss", None)}
    return {k: float(v) for k, v in scores.items() if _finite(v)}


class TrackerSink:
    """A telemetry sink (``write``/``close``) that drives the trackers of one run.

    The run's outcome is read at ``close``: the training loop closes its sinks in its ``finally``
    block, after it has set the result's status and final scores, so ``outcome`` (the loop's
    ``RunResult``, which the loop keeps updating) holds them by then.
    """

    def __init__(self, trackers: Mapping[str, Tracker], run: RunInfo, outcome: Any) -> None:
        self.run = run
        self.outcome = outcome
        self._trackers = dict(trackers)
        state_path = run.run_dir / STATE_FILE
        previous = json.loads(state_path.read_text()) if run.start_step and state_path.exists() else {}
        state: dict[str, Any] = {}
        try:
            for name, tracker in self._trackers.items():  # errors here end the run before it trains
                state[name] = tracker.start(run, previous.get(name) or {})
        except BaseException:
            # Those already started hold an open run (MLflow's would stay RUNNING): finish them.
            for name in state:
                try:
                    self._trackers[name].finish("failed", {})
                except Exception as exc:  # noqa: BLE001 - the start error is the one to raise
                    log.warning("tracker %s failed to finish (%s: %s)", name, type(exc).__name__, exc)
            self._trackers.clear()
            raise
        finally:  # what was started, for a later resume to find (a failed start included)
            state_path.write_text(json.dumps({**previous, **state}, indent=2))

    def _each(self, what: str, call: Callable[[Tracker], None]) -> None:
        for name, tracker in list(self._trackers.items()):
            try:
                call(tracker)
            except Exception as exc:  # noqa: BLE001 - a tracking hiccup must not end a training run
                log.warning("tracker %s failed to %s (%s: %s); it gets nothing more from this run",
                            name, what, type(exc).__name__, exc)
                del self._trackers[name]

    def write(self, record: Any) -> None:
        values = step_values(record)
        self._each("log a step", lambda t: t.log(record.step, values))

    def close(self) -> None:
        status = getattr(self.outcome, "status", "failed")
        scores = final_scores(self.outcome)
        self._each("finish", lambda t: t.finish(status, scores))
        self._trackers.clear()


def open_trackers(
    names: Sequence[str],
    run_dir: str | Path,
    config: Mapping[str, Any],
    outcome: Any,
    *,
    group: str | None = None,
    start_step: int = 0,
) -> list[TrackerSink]:
    """The sink that mirrors a run into ``names`` (``[]`` when there are none, or off rank 0).

    Args:
        names: tracker names (``track`` in the config).
        run_dir: the run directory (its name is the tracker run's name).
        config: the run's config as a dict (params).
        outcome: the object whose ``status``, ``eval_loss``, ``metrics`` and ``final_loss`` are
            final when the sink is closed (the loop's ``RunResult``).
        group: groups runs (a study's name).
        start_step: the step a resumed run continues after.

    Raises:
        ConfigError: an unknown tracker or a missing package.
        Exception: whatever a backend raises when its run cannot be opened (before training).
    """
    if not names or int(os.environ.get("RANK", "0")) != 0:  # one process writes, as for every other output
        return []
    check_trackers(names)
    run_dir = Path(run_dir)
    tags = {"tunescout.run_dir": str(run_dir.resolve())}
    for key in ("model", "method"):
        if config.get(key):
            tags[f"tunescout.{key}"] = str(config[key])
    if group:
        tags["tunescout.group"] = group
    info = RunInfo(name=run_dir.resolve().name, run_dir=run_dir, group=group, params=run_params(config),
                   config=dict(config), tags=tags, start_step=start_step)
    return [TrackerSink({name: TRACKERS[name].create() for name in names}, info, outcome)]


for _entry in (
    TrackerEntry("mlflow", ("mlflow",), "tunescout.track.mlflow_tracker:MlflowTracker"),
    TrackerEntry("tensorboard", ("tensorboard",), "tunescout.track.tensorboard_tracker:TensorBoardTracker"),
    TrackerEntry("wandb", ("wandb",), "tunescout.track.wandb_tracker:WandbTracker"),
):
    register_tracker(_entry)
