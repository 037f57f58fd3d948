"""The executor protocol every implementation follows (the messages it carries are in
:mod:`tunescout.study.messages`).

Apart from the package's ``__init__`` (which builds executors by name and so imports each
implementation), so that the implementations can import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from tunescout.study.messages import TrialEvent, TrialPayload

__all__ = ["Executor", "ExecutorOptions", "ranks_per_trial"]


@dataclass(frozen=True)
class ExecutorOptions:
    """What runs a study's trials (the study's ``executor``, checked by ``validate_executor``)."""

    name: str = "local"
    """``local`` (processes on this machine) or ``ray`` (tasks on a Ray cluster)."""
    address: str | None = None
    """The Ray cluster (``auto``, ``ray://HOST:PORT``, ``HOST:PORT``); None starts one here."""
    workers: int | None = None
    """Trials at once; default one per GPU group (local; one on CPU) or as many as the cluster fits (Ray)."""
    gpus_per_trial: float = 0
    """Whole GPUs above 1 train a trial on that many processes (FSDP2); a fraction shares one (Ray)."""
    cpus_per_trial: float | None = None
    """CPU cores (and torch threads) per trial."""
    max_retries: int = 1
    """Launches of a failed trial again, from its checkpoint, before it counts as failed."""


class Executor(Protocol):
    """Runs trials; at most ``slots`` at once.

    Contract (``tests/study/test_executor_contract.py`` runs it on every executor):
    - a submitted trial's messages arrive in order, each as one :class:`TrialEvent`, and exactly
      one ``done`` event ends it, also when its process dies (a ``failed`` summary saying why);
    - ``reply`` answers the trial's latest ``ask``; the trial waits for it;
    - ``cancel`` ends a trial (its ``done`` event still comes); ``shutdown`` ends them all and
      returns only when none is left running.
    """

    slots: int

    def submit(self, payload: TrialPayload) -> None: ...

    def running(self) -> list[str]: ...

    def next_event(self, timeout: float | None = None) -> TrialEvent | None:
        """The next message of any running trial, or None after ``timeout`` seconds."""

    def reply(self, trial_id: str, verdict: Any) -> None:
        """Answer an ``ask`` event: None to continue, a reason to stop, a Pause to pause."""

    def cancel(self, trial_id: str) -> None: ...

    def shutdown(self) -> None: ...



def ranks_per_trial(options: ExecutorOptions) -> int:
    """Processes one trial trains on: the whole GPUs it holds, else one."""
    gpus = options.gpus_per_trial or 0
    return int(gpus) if gpus > 1 else 1

