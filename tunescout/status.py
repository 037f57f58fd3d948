"""The statuses a trial can be in: plain facts that the store, the stopping rules and the
analyses all read, in a module that imports nothing, so none of them depends on another for it."""

from __future__ import annotations

__all__ = ["FINISHED", "STATUSES"]

STATUSES = ("pending", "running", "paused", "completed", "stopped", "diverged", "failed")
FINISHED = ("completed", "stopped", "diverged", "failed")
"""The statuses a trial ends in; the one definition every module imports."""
