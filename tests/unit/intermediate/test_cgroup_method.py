"""--method cgroup on the real cgroup2 hierarchy (/sys/fs/cgroup/unified on this host)."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import is_stopped, move_to_cgroup, stays, wait_for

from harness.guest.intermediate.freezer import read_frozen


def test_cgroup_freeze_and_signal_fallback(spawn, start_daemon, psi, test_cgroup):
    alone_dir = test_cgroup("alone")
    shared_dir = test_cgroup("shared")
    base = os.path.dirname(alone_dir)
    alone = spawn("alone", rss_mb=40)
    shared_victim = spawn("sharedvictim", rss_mb=5)
    shared_core = spawn("sharedcore", exe="py-core")
    move_to_cgroup(alone.pid, alone_dir)
    move_to_cgroup(shared_victim.pid, shared_dir)
    move_to_cgroup(shared_core.pid, shared_dir)

    daemon = start_daemon("--method", "cgroup", "--scope-cgroup", base, "--protect-comm", "sharedcore")
    psi.set(60)
    wait_for(lambda: read_frozen(alone_dir), 10, what="cgroup frozen")
    assert "frozen 1" in Path(alone_dir, "cgroup.events").read_text()
    assert alone.holds_still(0.3), "a frozen process must not make progress"
    first = daemon.wait_event("stop")  # the freeze completes before the event is written
    assert first["kind"] == "cgroup" and first["method"] == "cgroup" and first["pids"] == [alone.pid]

    # Not alone in its cgroup (a protected process is there too): falls back to SIGSTOP.
    wait_for(lambda: is_stopped(shared_victim.pid), 10, what="fallback to signals")
    fallback = wait_for(lambda: daemon.events("stop")[1:], 10, what="second stop event")[0]
    assert fallback["method"] == "signal" and fallback["note"] == "cgroup-shared"
    assert "cgroup freeze not possible" in daemon.log()
    stays(lambda: not is_stopped(shared_core.pid) and not read_frozen(shared_dir), 0.5, what="protected untouched")

    psi.set(0)
    wait_for(lambda: read_frozen(alone_dir) is False and not is_stopped(shared_victim.pid), 10, what="all resumed")
    assert alone.makes_progress() and shared_victim.makes_progress()
    assert daemon.terminate() == 0


def test_cgroup_unit_resumed_on_sigterm(spawn, start_daemon, psi, test_cgroup):
    frozen_dir = test_cgroup("term")
    victim = spawn("cgterm")
    move_to_cgroup(victim.pid, frozen_dir)
    daemon = start_daemon("--method", "cgroup", "--scope-cgroup", os.path.dirname(frozen_dir))
    psi.set(60)
    wait_for(lambda: read_frozen(frozen_dir), 10, what="frozen")
    assert daemon.terminate() == 0
    assert read_frozen(frozen_dir) is False and victim.makes_progress()


def test_emptied_cgroup_is_not_left_frozen(spawn, start_daemon, psi, test_cgroup):
    # If every process of a frozen cgroup dies, the record is dropped -- and the cgroup thawed,
    # or anything placed there later would freeze on arrival.
    frozen_dir = test_cgroup("emptied")
    victim = spawn("cgempty")
    move_to_cgroup(victim.pid, frozen_dir)
    daemon = start_daemon("--method", "cgroup", "--scope-cgroup", os.path.dirname(frozen_dir))
    psi.set(60)
    wait_for(lambda: read_frozen(frozen_dir), 10, what="frozen")
    psi.set(10)  # between the thresholds: nothing is resumed
    victim.popen.kill()  # SIGKILL works on frozen tasks
    victim.popen.wait(timeout=10)
    wait_for(lambda: read_frozen(frozen_dir) is False, 10, what="emptied cgroup thawed")
    assert daemon.events("resume") == [], "a vanished unit is dropped quietly"
    wait_for(lambda: daemon.status()["stopped"] == [], 10, what="record dropped")
