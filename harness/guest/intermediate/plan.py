"""Candidate stop units from a scan: pure, no I/O (the cgroup facts were read into the scan).

A leaf cgroup whose processes are all candidates (a workload in its own service: one unit, frozen
with --method cgroup, every member signalled with --method signal), else a whole process group
when all its members are candidates (a shell pipeline stops together), else a single process.
Largest resident set first.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Set as AbstractSet

from .config import FreezeMethod
from .snapshot import Scan
from .units import StopUnit, UnitKind


def _memory(scan: Scan, pids: Iterable[int]) -> tuple[int, int]:
    rss = swap = 0
    for pid in pids:
        proc = scan.by_pid[pid]
        rss += proc.rss_kb
        swap += proc.swap_kb
    return rss, swap


def cgroup_why_not(scan: Scan, cgroup: str | None, available: AbstractSet[int]) -> str | None:
    """None if `cgroup` can be one unit: every process in it a candidate, or one that joins its
    workload (never stopped alone: see JOINS_WORKLOAD); else why not."""
    if cgroup is None or cgroup == "/":
        return "cgroup-root"
    facts = scan.cgroup(cgroup)
    if facts is None or facts.dir is None:
        return "cgroup-freeze-unavailable"
    if facts.why_not is not None:
        return facts.why_not
    joining = {p for p in facts.procs if (proc := scan.proc(p)) is not None and proc.joins_workload}
    # (Only the cgroups of candidates are considered: a cgroup of -1000 processes alone is none.)
    if not facts.procs or not set(facts.procs) <= available | joining:
        return "cgroup-shared"  # someone in there is protected, never-stop or out of scope
    return None


def plan_units(scan: Scan, method: FreezeMethod, excluded: AbstractSet[int] = frozenset()) -> list[StopUnit]:
    """Candidate units, largest resident set first."""
    available = {p.pid for p in scan.distinct() if p.pid not in excluded}
    units: list[StopUnit] = []
    fallback_note: dict[int, str] = {}

    by_cgroup: dict[str | None, list[int]] = {}
    for pid in sorted(available):
        by_cgroup.setdefault(scan.by_pid[pid].cgroup, []).append(pid)
    for cgroup, pids in by_cgroup.items():
        why_not = cgroup_why_not(scan, cgroup, available)
        if why_not is not None:
            if method is FreezeMethod.CGROUP:
                for pid in pids:
                    fallback_note[pid] = why_not
            continue
        facts = scan.cgroup(cgroup)
        assert facts is not None and cgroup is not None
        # The processes read when the cgroup was judged exclusive, not a second reading
        # that could include a newcomer the classification never saw.
        members = sorted(facts.procs)
        rss, swap = _memory(scan, members)
        units.append(
            StopUnit(
                kind=UnitKind.CGROUP,
                key=f"cgroup:{cgroup}",
                members=tuple(scan.by_pid[p].member() for p in members),
                method=method,
                cgroup_dir=facts.dir,
                rss_kb=rss,
                swap_kb=swap,
            )
        )
        available -= set(members)

    by_pgid: dict[int, list[int]] = {}
    for pid in sorted(available):
        by_pgid.setdefault(scan.by_pid[pid].pgid, []).append(pid)
    for pgid, pids in by_pgid.items():
        group = scan.group(pgid)
        if len(group) > 1 and set(group) <= available:
            members = sorted(group, key=lambda p: (p != pgid, p))  # the group leader first
            rss, swap = _memory(scan, members)
            notes = {fallback_note[p] for p in members if p in fallback_note}
            units.append(
                StopUnit(
                    kind=UnitKind.PROCESS_GROUP,
                    key=f"pgid:{pgid}",
                    members=tuple(scan.by_pid[p].member() for p in members),
                    method=FreezeMethod.SIGNAL,
                    rss_kb=rss,
                    swap_kb=swap,
                    note=",".join(sorted(notes)) or None,
                )
            )
            continue
        for pid in pids:
            rss, swap = _memory(scan, [pid])
            units.append(
                StopUnit(
                    kind=UnitKind.PROCESS,
                    key=f"pid:{pid}",
                    members=(scan.by_pid[pid].member(),),
                    method=FreezeMethod.SIGNAL,
                    rss_kb=rss,
                    swap_kb=swap,
                    note=fallback_note.get(pid),
                )
            )
    units.sort(key=lambda u: (-u.rss_kb, u.key))
    return units
