"""Cleaning up after killed runs while keeping their evidence.

Only runs whose owner process is gone are touched (the owner's pid *and* kernel start time
are recorded, so a recycled pid does not make a dead run look alive). For such a run, reap
kills its QEMU processes (qemu_procs: ours, naming its folder), destroys its libvirt domains
(libvirt_reap: only where the owner is judged dead), removes what is bulky or live (disk
overlays, seeds, sockets) and marks the folder killed (`killed.json`: when, why, what was
removed). The serial log, QMP traffic, command line, QEMU output and seed copy stay, for
someone to read. Evidence goes after KEEP_DAYS days, or at once with `purge`.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.qemu_procs import kill_pids, qemu_processes_under
from harness.runtime import Run, all_runs, process_start_time, remove_run_dir, runtime_root

log = logging.getLogger(__name__)

__all__ = ["KEEP_DAYS", "KILLED_MARK", "ReapReport", "kill_pids", "qemu_processes_under", "reap"]

KILLED_MARK = "killed.json"
#: Evidence of killed runs is removed by the first reap this many days after it was marked.
KEEP_DAYS = 7.0
#: What a killed run's folder loses: disk overlays, seeds and half-written files (sockets too).
DISPOSABLE_SUFFIXES = (".qcow2", ".iso", ".img", ".raw", ".tmp")


@dataclass
class ReapReport:
    killed_pids: list[int] = field(default_factory=list)
    removed_runs: list[str] = field(default_factory=list)
    destroyed_domains: list[str] = field(default_factory=list)
    live_runs: list[str] = field(default_factory=list)
    #: (libvirt domain, why it was left alone): live, or not this reaper's to judge.
    kept_domains: list[tuple[str, str]] = field(default_factory=list)
    #: run id -> folder of each killed run whose evidence is kept
    kept_evidence: dict[str, Path] = field(default_factory=dict)
    #: Host budget cgroups and swap files of dead runs (harness.host.reap).
    host_leftovers: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if not (self.killed_pids or self.removed_runs or self.destroyed_domains or self.kept_evidence
                or self.host_leftovers):
            return f"nothing to reap ({len(self.live_runs)} live run(s) left alone)"
        return (f"killed {len(self.killed_pids)} QEMU process(es), destroyed "
                f"{len(self.destroyed_domains)} libvirt domain(s), removed "
                f"{len(self.host_leftovers)} budget cgroup(s) or swap file(s), kept the evidence of "
                f"{len(self.kept_evidence)} killed run(s), removed {len(self.removed_runs)} run "
                f"folder(s); {len(self.live_runs)} live run(s) left alone")


def why_dead(run: Run) -> str:
    owner = run.owner()
    if "pid" not in owner:
        return "it has no owner record"
    pid = int(owner["pid"])
    argv = " ".join(owner.get("argv", []))[:200]
    if process_start_time(pid) is None:
        return f"its owner, pid {pid} ({argv}), is gone"
    return f"its owner, pid {pid} ({argv}), is gone (the pid now belongs to a newer process)"


def killed_record(run: Run) -> dict | None:
    try:
        return json.loads((run.path / KILLED_MARK).read_text())
    except (OSError, ValueError):
        return None


def _dispose(run: Run) -> tuple[list[str], list[str]]:
    """Remove the overlays, seeds, half-written files and sockets of a dead run (never
    following a link); returns (removed, kept) paths relative to the run folder."""
    removed, kept = [], []
    for folder, dirs, files in os.walk(run.path, followlinks=False):
        for name in sorted(dirs + files):
            path = Path(folder) / name
            st = path.lstat()
            if stat.S_ISDIR(st.st_mode):
                continue
            rel = str(path.relative_to(run.path))
            if stat.S_ISSOCK(st.st_mode) or (stat.S_ISREG(st.st_mode) and path.suffix in DISPOSABLE_SUFFIXES):
                path.unlink(missing_ok=True)
                removed.append(rel)
            else:
                kept.append(rel)
    return removed, kept


def mark_killed(run: Run, killed_pids: list[int], domains: list[str]) -> None:
    removed, kept = _dispose(run)
    now = time.time()
    record = {"reaped_at": now, "reaped_at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
              "why": why_dead(run), "owner": run.owner(), "killed_pids": killed_pids,
              "destroyed_domains": domains, "removed": removed, "kept": kept}
    tmp = run.path / f"{KILLED_MARK}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.rename(run.path / KILLED_MARK)


def reap(libvirt_uri: str | None = None, include_libvirt: bool = True, *, purge: bool = False,
         keep_days: float = KEEP_DAYS) -> ReapReport:
    """Stop what dead runs left and keep their evidence (see the module docstring); with
    `purge`, remove their folders too."""
    report = ReapReport()
    # One look at who is alive: a run judged dead here is reaped everywhere below.
    dead: list[Run] = []
    for run in all_runs():
        if run.owner_alive():
            report.live_runs.append(run.run_id)
        else:
            dead.append(run)
    killed: dict[str, list[int]] = {}
    for run in dead:
        killed[run.run_id] = pids = qemu_processes_under(run.path)
        kill_pids(pids)
        report.killed_pids += pids
    if include_libvirt:
        from harness.machine.libvirt_reap import reap_domains
        verdicts = reap_domains(libvirt_uri, dead_run_ids={run.run_id for run in dead})
        report.destroyed_domains = verdicts.destroyed
        report.kept_domains = verdicts.kept
    from harness.host.reap import reap_host
    report.host_leftovers = reap_host({run.run_id: run.path for run in dead})
    for run in dead:
        record = killed_record(run)
        if purge or (record and time.time() - record.get("reaped_at", 0) > keep_days * 86400):
            remove_run_dir(run)
            report.removed_runs.append(run.run_id)
            continue
        if record is None:
            mark_killed(run, killed[run.run_id],
                        [d for d in report.destroyed_domains if d.startswith(f"bh-{run.run_id}-")])
        report.kept_evidence[run.run_id] = run.path
    if purge:
        _remove_if_empty()
    return report


def _remove_if_empty() -> None:
    """`make clean` leaves nothing of ours: the runtime folder goes too once no run is left."""
    root = runtime_root()
    for folder in (root / "runs", root):
        try:
            os.rmdir(folder)
        except OSError:
            return  # not empty (a live run) or already gone
