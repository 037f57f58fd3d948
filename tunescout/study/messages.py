"""What a trial and the sweep driver say to each other, as typed records.

The driver sends a :class:`TrialPayload` (through an executor) and reads :class:`TrialEvent`\\ s
back: step records, records it must answer (``ask``), and one ``done`` carrying the trial's
:class:`TrialSummary`. Every executor and the worker speak these and nothing else, so a key
cannot be spelled one way in the driver and another in the worker: a new field is one line here.
They cross process and machine boundaries by pickling (pipes, Ray), so they hold plain data only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from tunescout.stopping.policies import Verdict

__all__ = ["EventKind", "TrialEvent", "TrialPayload", "TrialSummary", "Verdict"]

EventKind = Literal["record", "ask", "done"]


@dataclass(frozen=True)
class TrialPayload:
    """Everything a trial's process needs: the run, resolved once by the driver, and where it runs."""

    trial_id: str
    config: dict[str, Any]
    """The trial's ``TrainConfig`` as a dict (``to_dict``), with the rule's evaluation points merged in."""
    task: dict[str, Any] = field(default_factory=dict)
    """The dataset's spec (metric, eval file, generation length) for the task metric; empty: none."""
    attempt: int = 1
    """1 for a first launch; more for a retry or a resumed trial (an executor keys messages by it)."""
    ask_at: tuple[tuple[int, int], ...] = ()
    """``(samples, min_steps)`` points where the rule may judge: the trial asks for a verdict there."""
    planned_samples: int | None = None
    """Samples if run to the end; the trial asks at its last record so no checkpoint outruns the store."""
    storage_check: tuple[str, str] | None = None
    """``(folder, marker)``: the study's storage as the driver marked it, checked before training (a
    node that does not share it would write checkpoints nobody resumes from)."""
    data_cache: str | None = None
    """The folder where the driver kept the data it tokenised: the trial reads them back."""
    threads: int | None = None
    """Torch threads (set by the executor)."""
    ranks: int = 1
    """Processes the trial trains on (FSDP2 above 1; set by the executor)."""
    cuda_device: str | None = None
    """``CUDA_VISIBLE_DEVICES`` for the trial (set by the local executor)."""
    driver_pid: int | None = None
    """The driver's pid on this machine: the trial ends itself when it is gone (local executor)."""

    def placed(self, **where: Any) -> TrialPayload:
        """The payload with the executor's placement (threads, ranks, device, driver) filled in."""
        return dataclasses.replace(self, **where)


@dataclass(frozen=True)
class TrialSummary:
    """How a trial ended: what the driver records for it."""

    status: str
    """``completed``, ``stopped``, ``diverged``, ``paused`` (at a rung) or ``failed``."""
    reason: str = ""
    steps: int = 0
    samples: int = 0
    tokens: int = 0
    wall_s: float = 0.0
    eval_loss: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    retryable: bool = True
    """False for a failure another attempt would meet again (bad config or data): not retried."""
    traceback: str = ""

    @classmethod
    def lost(cls, reason: str) -> TrialSummary:
        """The end of a trial whose process or task died without reporting one."""
        return cls(status="failed", reason=reason)

    def totals(self) -> dict[str, Any]:
        """The trained amounts the store keeps with the trial's status."""
        return {"steps": self.steps, "samples": self.samples, "tokens": self.tokens, "wall_s": self.wall_s}

    def scores(self) -> dict[str, Any]:
        """The final scores: the task metrics, and ``val_loss`` when there was an eval split."""
        out = dict(self.metrics)
        if self.eval_loss is not None:
            out["val_loss"] = self.eval_loss
        return out


@dataclass(frozen=True)
class TrialEvent:
    """One message of a running trial, in the order the trial sent it."""

    trial_id: str
    kind: EventKind
    """``record`` (store it), ``ask`` (store it and ``reply`` with a verdict) or ``done`` (the last)."""
    record: dict[str, Any] | None = None
    """The step record (``StepRecord`` as a dict) of a ``record`` or ``ask``."""
    summary: TrialSummary | None = None
    """The trial's end, on ``done``."""

    def __post_init__(self) -> None:
        if (self.kind == "done") != (self.summary is not None) or (self.kind != "done") != (self.record is not None):
            raise ValueError(f"trial {self.trial_id}: a {self.kind!r} event carries "
                             f"{'a summary' if self.kind == 'done' else 'a step record'} and nothing else")
