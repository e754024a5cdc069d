"""Removing what killed runs left behind: QEMU processes, libvirt domains, run folders.

Only runs whose owner process is gone are touched (the owner's pid *and* kernel start time
are recorded, so a recycled pid does not make a dead run look alive). A QEMU process is
killed only if its command line points into that dead run's folder.
"""

from __future__ import annotations

import logging
import os
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
    #: Host budget cgroups and swap files of dead runs (harness.host.reap).
    host_leftovers: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if not (self.killed_pids or self.removed_runs or self.destroyed_domains or self.host_leftovers):
            return f"nothing to reap ({len(self.live_runs)} live run(s) left alone)"
        return (f"killed {len(self.killed_pids)} QEMU process(es), destroyed "
                f"{len(self.destroyed_domains)} libvirt domain(s), removed "
                f"{len(self.removed_runs)} run folder(s), {len(self.host_leftovers)} budget cgroup(s) or "
                f"swap file(s); {len(self.live_runs)} live run(s) left alone")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def qemu_processes_under(path: Path) -> list[int]:
    """QEMU processes whose command line mentions `path` (their files live there)."""
    needle = str(path)
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            cmd = _cmdline(int(entry.name))
            if "qemu-system" in cmd and needle in cmd:
                pids.append(int(entry.name))
    return pids


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() and
                                              "qemu" in _cmdline(p) for p in pids):
        time.sleep(0.05)


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
        report.destroyed_domains = reap_domains(libvirt_uri, keep_run_ids=set(report.live_runs))
    from harness.host.reap import reap_host
    report.host_leftovers = reap_host({run.run_id: run.path for run in dead})
    for run in dead:
        remove_run_dir(run)
        report.removed_runs.append(run.run_id)
    return report


