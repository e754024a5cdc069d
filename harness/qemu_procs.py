"""Finding and killing our own QEMU processes by the run folder their command line names.

A process counts only if it is a QEMU (argv[0] is qemu-system-*) running entirely as our
uid, and an argument names the folder as a whole path: the folder of run `4242` is not
named by `.../runs/4242abc/...`. Killing goes through a pidfd, re-checked after opening, so
a pid recycled since it was listed is never signalled; the exit is awaited on the pidfd.
"""

from __future__ import annotations

import logging
import os
import re
import select
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")[:-1]


def _uids(pid: int) -> tuple[int, ...]:
    """Real, effective, saved and filesystem uid."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return tuple(int(x) for x in line.split()[1:])
    except OSError:
        pass
    return ()


def _is_our_qemu(pid: int, argv: list[str]) -> bool:
    """A QEMU (by its argv[0]) running entirely as us."""
    return (bool(argv) and os.path.basename(argv[0]).startswith("qemu-system")
            and set(_uids(pid)) == {os.geteuid()})


def names_path(argv: list[str], path: Path) -> bool:
    """Does an argument name `path` itself or something inside it, as a whole path (QEMU
    writes `path=...`, `file=...,format=...`, `exec:cat ...`)? `/runs/4242` is not named
    by `/runs/4242abc/...`."""
    pattern = re.compile(r"(?:^|[=,:\s])" + re.escape(str(path).rstrip("/")) + r"(?:/|,|\s|$)")
    return any(pattern.search(arg) for arg in argv)


def qemu_processes_under(path: Path) -> list[int]:
    """Our QEMU processes whose command line names `path` (their files live there)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            pid = int(entry.name)
            argv = _cmdline(pid)
            if names_path(argv, path) and _is_our_qemu(pid, argv):
                pids.append(pid)
    return pids


def kill_pids(pids: list[int], timeout: float = 10.0) -> None:
    """SIGKILL each pid that is still a QEMU of ours, through a pidfd (a pid recycled since it
    was listed is re-checked, then signalled without a gap), and wait for them to exit."""
    handles = []
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        if not _is_our_qemu(pid, _cmdline(pid)):
            os.close(fd)
            continue
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        handles.append(fd)
    try:
        waiter = select.poll()
        for fd in handles:
            waiter.register(fd, select.POLLIN)  # readable once the process has exited
        deadline = time.monotonic() + timeout
        pending = set(handles)
        while pending and (left := deadline - time.monotonic()) > 0:
            for fd, _event in waiter.poll(left * 1000):
                waiter.unregister(fd)
                pending.discard(fd)
        if pending:
            log.warning("%d QEMU process(es) still exist %.0f s after SIGKILL", len(pending), timeout)
    finally:
        for fd in handles:
            os.close(fd)
