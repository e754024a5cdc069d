"""The session-end check of conftest.py (no process of ours left in state T) looks at this
session's processes only: a stopped process of another user, or of another test run (a second
pytest, an xdist worker: its own marker value), is none of its business."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator

import pytest
from conftest import (
    CGROUP2_ROOT,
    SESSION_CGROUP_PREFIX,
    SPAWN_MARKER_NAME,
    dead_session_cgroups,
    is_stopped,
    remove_cgroup_tree,
    stopped_marked_pids,
    wait_for,
)


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


def test_a_killed_sessions_cgroups_are_swept_and_a_live_ones_kept(foreign):
    """A session killed before its teardown leaves bh-intermediate-test-<its pid>; the next session
    removes it, frozen process inside and all, and leaves a live session's tree alone."""
    if CGROUP2_ROOT is None or not os.access(CGROUP2_ROOT, os.W_OK):
        pytest.skip("no writable cgroup2 hierarchy at /sys/fs/cgroup/unified")
    gone = subprocess.Popen(["true"])
    gone.wait()
    live = subprocess.Popen(["sleep", "600"])
    foreign.append(live)
    dead_tree = os.path.join(CGROUP2_ROOT, f"{SESSION_CGROUP_PREFIX}{gone.pid}")
    live_tree = os.path.join(CGROUP2_ROOT, f"{SESSION_CGROUP_PREFIX}{live.pid}")
    os.makedirs(os.path.join(dead_tree, "unit"))
    os.mkdir(live_tree)
    leftover = subprocess.Popen(["sleep", "600"])
    try:
        with open(os.path.join(dead_tree, "unit", "cgroup.procs"), "w") as procs:
            procs.write(str(leftover.pid))
        with open(os.path.join(dead_tree, "unit", "cgroup.freeze"), "w") as freeze:
            freeze.write("1")
        found = dead_session_cgroups()
        assert dead_tree in found and live_tree not in found
        for top in found:
            remove_cgroup_tree(top)
        assert leftover.wait(timeout=10) == -signal.SIGKILL
        assert not os.path.exists(dead_tree) and os.path.isdir(live_tree)
    finally:
        leftover.kill()
        leftover.wait()
        for tree in (os.path.join(dead_tree, "unit"), dead_tree, live_tree):
            try:
                os.rmdir(tree)
            except OSError:
                pass
