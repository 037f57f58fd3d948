"""What every executor speaks: the events a trial sends the driver and the executor protocol.

Apart from the package's ``__init__`` (which builds executors by name and so imports each
implementation), so that the implementations can import these without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

__all__ = ["Event", "Executor", "ranks_per_trial"]


@dataclass
class Event:
    """What a running trial reported to the driver."""

    trial_id: str
    kind: str
    """``record`` (store it), ``ask`` (store it and ``reply`` with a verdict) or ``done`` (last)."""
    data: dict[str, Any] = field(default_factory=dict)


class Executor(Protocol):
    """Runs trials; at most ``slots`` at once.

    Contract (``tests/study/test_executor_contract.py`` runs it on every executor):
    - a submitted trial's messages arrive in order, each as one :class:`Event`, and exactly one
      ``done`` event ends it, also when its process dies (``status: failed`` and why);
    - ``reply`` answers the trial's latest ``ask``; the trial waits for it;
    - ``cancel`` ends a trial (its ``done`` event still comes); ``shutdown`` ends them all and
      returns only when none is left running.
    """

    slots: int

    def submit(self, trial_id: str, payload: dict[str, Any]) -> None: ...

    def running(self) -> list[str]: ...

    def next_event(self, timeout: float | None = None) -> Event | None:
        """The next message of any running trial, or None after ``timeout`` seconds."""

    def reply(self, trial_id: str, verdict: Any) -> None:
        """Answer an ``ask`` event: None to continue, a reason to stop, a Pause to pause."""

    def cancel(self, trial_id: str) -> None: ...

    def shutdown(self) -> None: ...



def ranks_per_trial(options: Mapping[str, Any]) -> int:
    """Processes one trial trains on: the whole GPUs it holds, else one."""
    gpus = options.get("gpus_per_trial") or 0
    return int(gpus) if gpus > 1 else 1

