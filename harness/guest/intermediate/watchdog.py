"""The watchdog: a tiny separate process that resumes everything if the daemon dies.

SIGTERM/SIGINT are handled by the daemon itself; the watchdog exists for SIGKILL (and crashes).
It blocks in poll() on a pidfd of its parent -- no polling loop, no CPU -- and when the parent is
gone it resumes whatever the state dir still lists.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys

from .events import EventLog
from .recovery import resume_recorded
from .state import StateStore

log = logging.getLogger(__name__)

RESUME_REASON = "watchdog"


def _package_root() -> str:
    # .../harness/guest/intermediate/watchdog.py -> the directory that contains `harness`
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def spawn_watchdog(state_dir: str, events_path: str | None, log_level: str = "INFO") -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "harness.guest.intermediate",
        "watchdog",
        "--parent-pid",
        str(os.getpid()),
        "--state-dir",
        state_dir,
        "--log-level",
        log_level,
    ]
    if events_path:
        cmd += ["--events", events_path]
    env = dict(os.environ)
    root = _package_root()
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, close_fds=True)


def wait_for_parent_death(parent_pid: int) -> None:
    try:
        pidfd = os.pidfd_open(parent_pid)
    except ProcessLookupError:
        return
    try:
        # If the parent died before pidfd_open, the pid may already be someone else's: we were
        # re-parented, so getppid() tells us the truth.
        if os.getppid() != parent_pid:
            return
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        while not poller.poll():
            pass
    finally:
        os.close(pidfd)


def run_watchdog(parent_pid: int, state_dir: str, events_path: str | None) -> int:
    # The daemon handles these itself (resuming everything); the watchdog must outlive it.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    wait_for_parent_death(parent_pid)
    events = EventLog(events_path)
    try:
        result, remaining = resume_recorded(StateStore(state_dir), events, RESUME_REASON)
    finally:
        events.close()
    if result.done:
        log.warning("daemon %d died; watchdog resumed %d process(es)", parent_pid, len(result.done))
    if remaining:
        # They stay in the state file: resume-all (the unit's ExecStopPost) or the next daemon retries.
        log.error("watchdog could not resume %d unit(s); left recorded in %s", len(remaining), state_dir)
        return 1
    return 0
