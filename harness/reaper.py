"""Removing what killed runs left behind: QEMU processes, libvirt domains, run folders.

Only runs whose owner process is gone are touched (the owner's pid *and* kernel start time
are recorded, so a recycled pid does not make a dead run look alive). A QEMU process is
killed only if it runs as our uid and its command line names that dead run's folder as a
whole path (a run `4242` never matches the folder of a run `4242abc`). libvirt domains:
see libvirt_reap.
"""

from __future__ import annotations

import logging
import os
import re
import select
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.runtime import Run, all_runs, remove_run_dir

log = logging.getLogger(__name__)


@dataclass
class ReapReport:
    killed_pids: list[int] = field(default_factory=list)
    removed_runs: list[str] = field(default_factory=list)
    destroyed_domains: list[str] = field(default_factory=list)
    live_runs: list[str] = field(default_factory=list)
    #: (libvirt domain, why it was left alone): live, or not this reaper's to judge.
    kept_domains: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        if not (self.killed_pids or self.removed_runs or self.destroyed_domains):
            return f"nothing to reap ({len(self.live_runs)} live run(s) left alone)"
        return (f"killed {len(self.killed_pids)} QEMU process(es), destroyed "
                f"{len(self.destroyed_domains)} libvirt domain(s), removed "
                f"{len(self.removed_runs)} run folder(s); {len(self.live_runs)} live run(s) "
                f"left alone")


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


def reap(libvirt_uri: str | None = None, include_libvirt: bool = True) -> ReapReport:
    report = ReapReport()
    # One look at who is alive: a run judged dead here is reaped everywhere below.
    dead: list[Run] = []
    for run in all_runs():
        if run.owner_alive():
            report.live_runs.append(run.run_id)
        else:
            dead.append(run)
    for run in dead:
        pids = qemu_processes_under(run.path)
        kill_pids(pids)
        report.killed_pids += pids
    if include_libvirt:
        from harness.machine.libvirt_reap import reap_domains
        verdicts = reap_domains(libvirt_uri, dead_run_ids={run.run_id for run in dead})
        report.destroyed_domains = verdicts.destroyed
        report.kept_domains = verdicts.kept
    for run in dead:
        remove_run_dir(run)
        report.removed_runs.append(run.run_id)
    return report


