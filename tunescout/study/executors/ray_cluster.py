"""The Ray executor: each trial is a Ray task with the CPUs and GPUs it asks for, on any node.

The driver stays where it is and stays the store's only writer. Trials talk to it through one
small actor, the *mailbox*: a trial appends its messages there (in order: Ray runs the calls
one caller makes to a single-threaded actor in the order they were made) and, at the records
its rule judges, polls there for the driver's verdict; the driver drains the mailbox and posts
verdicts. Nothing else crosses the network: weights and checkpoints stay in the trial's run
directory under the study's ``storage``, which every node must see, so a trial retried on
another node resumes where the lost one checkpointed.

Ray itself retries nothing (``max_retries=0``): the driver retries a failed trial, so that every
attempt is recorded in the store. When the driver dies, Ray ends its job's tasks and actors.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from typing import Any

from tunescout.study.executors.base import ExecutorOptions, ranks_per_trial
from tunescout.study.messages import TrialEvent, TrialPayload, TrialSummary

__all__ = ["ActorChannel", "RayExecutor"]

log = logging.getLogger(__name__)

INSTALL_HINT = "the ray executor needs Ray: pip install 'tunescout[ray]'"
POLL_S = 0.05
"""How often the driver drains the mailbox, and a trial waiting for a verdict looks for it."""


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return ray


class _Mailbox:
    """Messages from trials to the driver and verdicts back, keyed by ``trial_id#attempt`` so
    that nothing from a lost attempt reaches the next one."""

    def __init__(self) -> None:
        self.inbox: list[tuple[str, str, Any]] = []
        self.verdicts: dict[str, Any] = {}

    def put(self, key: str, kind: str, data: Any) -> None:
        self.inbox.append((key, kind, data))

    def take(self) -> list[tuple[str, str, Any]]:
        out, self.inbox = self.inbox, []
        return out

    def reply(self, key: str, verdict: Any) -> None:
        self.verdicts[key] = verdict

    def verdict(self, key: str) -> tuple[bool, Any]:
        """``(True, verdict)`` once the driver replied (and forgets it), else ``(False, None)``."""
        if key in self.verdicts:
            return True, self.verdicts.pop(key)
        return False, None


class ActorChannel:
    """A trial's :class:`~tunescout.study.worker.Channel` through the mailbox actor.

    Records go without waiting; ``done`` waits until the mailbox holds it, so it is there
    before the task's end is visible to the driver. A dead mailbox (the driver is gone) raises.
    """

    def __init__(self, mailbox: Any, key: str) -> None:
        self.mailbox, self.key = mailbox, key

    def send(self, record: dict[str, Any]) -> None:
        self.mailbox.put.remote(self.key, "record", record)

    def done(self, summary: TrialSummary) -> None:
        _ray().get(self.mailbox.put.remote(self.key, "done", summary))

    def ask(self, record: dict[str, Any]) -> Any:
        ray = _ray()
        self.mailbox.put.remote(self.key, "ask", record)
        while True:
            replied, verdict = ray.get(self.mailbox.verdict.remote(self.key))
            if replied:
                return verdict
            time.sleep(POLL_S / 5)


def _ray_trial(mailbox: Any, key: str, payload: TrialPayload) -> None:
    """The Ray task of one trial attempt."""
    from tunescout.study.worker import run_trial

    run_trial(ActorChannel(mailbox, key), payload)


class RayExecutor:
    """Trials as Ray tasks on a cluster (``address``: ``auto``, ``ray://HOST:PORT``, ``HOST:PORT``)
    or, with no address (and no ``RAY_ADDRESS``) and no Ray running in this process, on a Ray
    instance started here: never on a cluster some earlier command left running on this machine,
    which a bare ``ray.init()`` would join.

    Options (validated by :func:`~tunescout.study.executors.validate_executor`):
    ``gpus_per_trial`` (Ray's ``num_gpus``; a whole number above 1 trains the trial on that many
    processes), ``cpus_per_trial`` (Ray's ``num_cpus`` and the trial's torch threads; default
    1), ``workers`` (trials submitted at once; default as many as the cluster's CPUs or GPUs fit).
    """

    def __init__(self, options: ExecutorOptions) -> None:
        ray = _ray()
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            address = options.address or os.environ.get("RAY_ADDRESS") or "local"
            ray.init(address=address, include_dashboard=False, configure_logging=False)
        gpus = float(options.gpus_per_trial or 0)
        cpus = float(options.cpus_per_trial or 1)
        self.ranks = ranks_per_trial(options)
        self.threads = max(1, int(cpus))
        resources = ray.cluster_resources()
        fit = int(resources.get("GPU", 0) // gpus) if gpus else int(resources.get("CPU", 1) // cpus)
        if gpus and fit < 1:
            raise ValueError(f"executor.gpus_per_trial: {gpus:g} GPUs per trial, but the Ray cluster has "
                             f"{resources.get('GPU', 0):g}")
        self.slots = int(options.workers or max(1, fit))
        self._task = ray.remote(_ray_trial).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
        self._mailbox = ray.remote(num_cpus=0)(_Mailbox).remote()
        self._refs: dict[str, Any] = {}
        self._key_of: dict[str, str] = {}
        """Each running trial's mailbox key (``trial_id#attempt``): messages under any other key
        come from a lost attempt and are dropped."""
        self._events: deque[TrialEvent] = deque()
        self._closed = False

    def submit(self, payload: TrialPayload) -> None:
        trial_id = payload.trial_id
        key = f"{trial_id}#{payload.attempt}"
        placed = payload.placed(threads=self.threads, ranks=self.ranks, driver_pid=None, cuda_device=None)
        self._key_of[trial_id] = key
        self._refs[trial_id] = self._task.remote(self._mailbox, key, placed)

    def running(self) -> list[str]:
        return list(self._refs)

    def _end(self, trial_id: str, summary: TrialSummary) -> None:
        self._refs.pop(trial_id, None)
        self._key_of.pop(trial_id, None)
        self._events.append(TrialEvent(trial_id, "done", summary=summary))

    def _collect(self) -> None:
        """Move the mailbox's messages into events (those of attempts no longer running dropped)."""
        ray = _ray()
        for key, kind, data in ray.get(self._mailbox.take.remote()):
            trial_id = key.rsplit("#", 1)[0]
            if self._key_of.get(trial_id) != key:
                continue
            if kind == "done":
                self._end(trial_id, data)
            else:
                self._events.append(TrialEvent(trial_id, kind, record=data))

    def _reap(self) -> None:
        """Trials whose task ended without a ``done`` message: the worker or its node died, or
        the task was cancelled."""
        ray = _ray()
        if not self._refs:
            return
        ready, _ = ray.wait(list(self._refs.values()), num_returns=len(self._refs), timeout=0)
        if not ready:
            return
        self._collect()  # a done message sent just before the task ended
        ended = set(ready)
        for trial_id, ref in list(self._refs.items()):
            if ref not in ended:
                continue
            try:
                ray.get(ref)
                reason = "the trial's task ended without reporting"
            except Exception as exc:  # noqa: BLE001 - why Ray lost it is the reason
                reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
            self._end(trial_id, TrialSummary.lost(reason))

    def next_event(self, timeout: float | None = None) -> TrialEvent | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if not self._events:
                self._collect()
            if not self._events:
                self._reap()
            if self._events:
                return self._events.popleft()
            if not self._refs or (deadline is not None and time.monotonic() >= deadline):
                return None
            time.sleep(POLL_S)

    def reply(self, trial_id: str, verdict: Any) -> None:
        key = self._key_of.get(trial_id)
        if key is not None:
            self._mailbox.reply.remote(key, verdict)

    def cancel(self, trial_id: str) -> None:
        """Kill the trial's worker; its end arrives as a ``done`` event (failed, cancelled)."""
        ref = self._refs.get(trial_id)
        if ref is not None:
            _ray().cancel(ref, force=True)

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        ray = _ray()
        refs = list(self._refs.values())
        for trial_id in list(self._refs):
            self.cancel(trial_id)
        if refs:
            _, left = ray.wait(refs, num_returns=len(refs), timeout=30)
            if left:  # cancelled with force, yet alive: say so rather than claim a clean end
                log.warning("%d trial task(s) still running 30 s after they were cancelled; Ray ends them with "
                            "this driver's job", len(left))
        self._refs.clear()
        self._key_of.clear()
        ray.kill(self._mailbox)
        if self._owns_ray:
            ray.shutdown()
