"""A trial process never outlives its sweep driver, by either of the two mechanisms."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from procs import alive

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.time() + seconds
    while alive(pid) and time.time() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def _trial_code(driver_pid: int | None) -> str:
    return textwrap.dedent(f"""
        import time
        from tunescout.study.worker import _die_with_driver
        _die_with_driver({driver_pid!r})
        print("armed", flush=True)
        time.sleep(120)
    """)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_the_kernel_kills_a_trial_whose_parent_dies() -> None:
    """No pipe, no watcher (``driver_pid`` None): only the parent-death signal can end it."""
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", {_trial_code(None)!r}], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "armed"
        print(child.pid, flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True, env=ENV)
    trial = int(parent.stdout.readline())
    assert alive(trial)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    assert _gone_within(trial, 5), "the trial outlived its parent"


def test_the_watcher_kills_a_trial_whose_driver_dies() -> None:
    """The driver is not the trial's parent (the parent, this test, stays alive): the watcher thread acts."""
    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    trial = subprocess.Popen([sys.executable, "-c", _trial_code(driver.pid)], stdout=subprocess.PIPE, text=True,
                             env=ENV)
    try:
        assert trial.stdout.readline().strip() == "armed"
        time.sleep(1.0)
        assert trial.poll() is None  # a live driver keeps it alive
        driver.kill()
        driver.wait()
        assert _gone_within(trial.pid, 5), "the trial outlived its driver"
        assert trial.wait() == -signal.SIGKILL
    finally:
        for p in (driver, trial):
            if p.poll() is None:
                p.kill()
