"""A Ray head on this machine for the Ray executor's tests, as `ray start` would run on a real
head node: started once per session (seconds), ended with every Ray process it started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

RAY = Path(sys.executable).with_name("ray")
# Ray >= 2.5x enables token authentication for `ray start`; a throwaway head on this machine opts out.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **RAY_ENV}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """A Ray head on this machine with 2 CPUs; ``--block`` ends every Ray process it started when
    it is terminated, so nothing outlives the session."""
    import ray  # noqa: F401  (the test extra installs it; missing, these tests fail rather than skip)

    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)  # for the drivers this process runs
    port = _free_port()
    head = subprocess.Popen([str(RAY), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false", "--disable-usage-stats"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    address = f"127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        probe = subprocess.run([str(RAY), "status", f"--address={address}"], capture_output=True, env=ENV)
        if probe.returncode == 0:
            break
        assert head.poll() is None, "ray start exited"
        time.sleep(1)
    else:
        head.send_signal(signal.SIGTERM)
        pytest.fail("the Ray head did not come up within 90 s")
    yield address
    head.send_signal(signal.SIGTERM)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        head.kill()
    for key, value in saved.items():
        os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


