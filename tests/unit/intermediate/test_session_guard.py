"""The session-end check of conftest.py (no process of ours left in state T) looks at this
session's processes only: a stopped process of another user, or of another test run (a second
pytest, an xdist worker: its own marker value), is none of its business."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator

import pytest
from conftest import SPAWN_MARKER_NAME, is_stopped, stopped_marked_pids, wait_for


@pytest.fixture
def foreign() -> Iterator[list[subprocess.Popen]]:
    """Processes this session did not start (as far as the check can know), ended afterwards."""
    started: list[subprocess.Popen] = []
    yield started
    for popen in started:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            popen.send_signal(sig)
        popen.wait(timeout=10)


def stopped(popen: subprocess.Popen) -> int:
    popen.send_signal(signal.SIGSTOP)
    wait_for(lambda: is_stopped(popen.pid), 5, what=f"pid {popen.pid} in state T")
    return popen.pid


def test_only_this_sessions_stopped_processes_are_reported(spawn, foreign):
    other_user = subprocess.Popen(["sleep", "600"], user="nobody", group="nogroup", extra_groups=[],
                                  env={"PATH": os.environ["PATH"]})
    # Another test run's process: the same marker, another run's value (its pytest's pid).
    other_run = subprocess.Popen(["sleep", "600"], env={"PATH": os.environ["PATH"], SPAWN_MARKER_NAME: "1"})
    foreign += [other_user, other_run]
    strangers = {stopped(other_user), stopped(other_run)}
    ours = stopped(spawn().popen)

    reported = {int(entry.split()[0]) for entry in stopped_marked_pids()}
    assert ours in reported, "our own stopped process went unreported"
    assert not reported & strangers, f"another user's or run's stopped process reported: {reported & strangers}"
