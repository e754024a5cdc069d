"""Per-run scratch space and the record the reaper uses to clean up after killed runs.

Every process that starts VMs (a pytest worker, a CLI command) owns one *run*: a folder
`<runtime>/runs/<run-id>/` with `owner.json` (pid and kernel start time of the owner) and a
folder per VM holding its overlay, seed, sockets, serial log and QEMU pid. When the owner
is gone (even SIGKILLed), `balloon-harness reap` kills what the pids still name and
removes the folder.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

RUN_PREFIX = "bh"


def runtime_root() -> Path:
    env = os.environ.get("BALLOON_HARNESS_RUNTIME")
    # Short path on purpose: unix socket paths are limited to 107 bytes.
    root = Path(env) if env else Path(tempfile.gettempdir()) / f"balloon-harness-{os.getuid()}"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return root


def process_start_time(pid: int) -> int | None:
    """Start time in clock ticks since boot (field 22 of /proc/PID/stat); None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def process_alive(pid: int, start_time: int | None) -> bool:
    now = process_start_time(pid)
    return now is not None and (start_time is None or now == start_time)


@dataclass(frozen=True)
class Run:
    run_id: str
    path: Path

    @property
    def vms_dir(self) -> Path:
        return self.path / "vms"

    def vm_dir(self, name: str) -> Path:
        path = self.vms_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def owner(self) -> dict:
        try:
            return json.loads((self.path / "owner.json").read_text())
        except (OSError, ValueError):
            return {}

    def owner_alive(self) -> bool:
        owner = self.owner()
        if "pid" not in owner:
            return False
        return process_alive(int(owner["pid"]), owner.get("start_time"))


_current: Run | None = None
_lock = threading.Lock()


def current_run() -> Run:
    """The run of this process, created on first use (one per pytest-xdist worker)."""
    global _current
    with _lock:
        if _current is None or _current.owner().get("pid") != os.getpid():
            _current = _create_run()
        return _current


def peek_run() -> Run | None:
    """The run of this process if it has one (never creates it)."""
    with _lock:
        if _current is not None and _current.owner().get("pid") == os.getpid():
            return _current
        return None


def _remove_own_run() -> None:
    # A normal exit leaves nothing behind; QEMU children die with us (PR_SET_PDEATHSIG).
    if _current is not None and _current.owner().get("pid") == os.getpid():
        remove_run_dir(_current)


atexit.register(_remove_own_run)


def _create_run() -> Run:
    run_id = f"{os.getpid()}{secrets.token_hex(2)}"
    path = runtime_root() / "runs" / run_id
    path.mkdir(parents=True)
    owner = {"pid": os.getpid(), "start_time": process_start_time(os.getpid()),
             "argv": list(sys.argv)}
    tmp = path / "owner.json.tmp"
    tmp.write_text(json.dumps(owner))
    tmp.rename(path / "owner.json")
    return Run(run_id, path)


def all_runs() -> list[Run]:
    base = runtime_root() / "runs"
    if not base.is_dir():
        return []
    return [Run(p.name, p) for p in sorted(base.iterdir()) if p.is_dir()]


def remove_run_dir(run: Run) -> None:
    shutil.rmtree(run.path, ignore_errors=True)
