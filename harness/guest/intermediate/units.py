"""Stop units: what is stopped together (a process, a whole process group, or a cgroup)."""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace

from .classify import Category, Classification
from .config import FreezeMethod
from .procs import ProcStat, cgroup2_mount, cgroup_fs_path

log = logging.getLogger(__name__)


class UnitKind(enum.Enum):
    PROCESS = "process"
    PROCESS_GROUP = "process-group"
    CGROUP = "cgroup"


@dataclass(frozen=True)
class Member:
    pid: int
    starttime: int
    comm: str

    def to_dict(self) -> dict[str, object]:
        return {"pid": self.pid, "starttime": self.starttime, "comm": self.comm}

    @classmethod
    def from_stat(cls, stat: ProcStat) -> Member:
        return cls(pid=stat.pid, starttime=stat.starttime, comm=stat.comm)

    @classmethod
    def from_dict(cls, data: dict) -> Member:
        return cls(pid=int(data["pid"]), starttime=int(data["starttime"]), comm=str(data.get("comm", "")))


@dataclass(frozen=True)
class StopUnit:
    kind: UnitKind
    key: str
    members: tuple[Member, ...]
    method: FreezeMethod
    cgroup_dir: str | None = None  # filesystem path of the cgroup, for CGROUP units
    rss_kb: int = 0
    swap_kb: int = 0
    note: str | None = None  # why a cgroup-method unit fell back to signals

    @property
    def pids(self) -> list[int]:
        return [m.pid for m in self.members]

    @property
    def comm(self) -> str:
        return self.members[0].comm if self.members else ""

    def with_members(self, members: Iterable[Member]) -> StopUnit:
        return replace(self, members=tuple(members))

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind.value,
            "key": self.key,
            "method": self.method.value,
            "cgroup_dir": self.cgroup_dir,
            "rss_kb": self.rss_kb,
            "swap_kb": self.swap_kb,
            "note": self.note,
            "members": [m.to_dict() for m in self.members],
        }

    @classmethod
    def from_dict(cls, data: dict) -> StopUnit:
        return cls(
            kind=UnitKind(data["kind"]),
            key=str(data["key"]),
            members=tuple(Member.from_dict(m) for m in data.get("members", [])),
            method=FreezeMethod(data.get("method", "signal")),
            cgroup_dir=data.get("cgroup_dir"),
            rss_kb=int(data.get("rss_kb", 0)),
            swap_kb=int(data.get("swap_kb", 0)),
            note=data.get("note"),
        )


def _member(classification: Classification, pid: int) -> Member:
    return Member.from_stat(classification.table.stats[pid])


def _memory(classification: Classification, pids: Iterable[int]) -> tuple[int, int]:
    rss = swap = 0
    for pid in pids:
        mem = classification.infos[pid].memory
        rss += mem.rss_kb
        swap += mem.swap_kb
    return rss, swap


def read_cgroup_procs(cgroup_dir: str) -> list[int] | None:
    try:
        with open(os.path.join(cgroup_dir, "cgroup.procs"), encoding="ascii") as handle:
            return [int(line) for line in handle.read().split()]
    except OSError:
        return None


def cgroup_exclusive(
    cgroup: str | None, available: set[int], mount: str | None
) -> tuple[str | None, list[int], str | None]:
    """(cgroup dir, its processes, None) if the cgroup can be frozen as one unit, else
    (None, [], why not). `mount` is where cgroup2 is mounted (None: nowhere)."""
    if cgroup is None or cgroup == "/":
        return None, [], "cgroup-root"
    cgroup_dir = cgroup_fs_path(cgroup, mount) if mount is not None else None
    if cgroup_dir is None or not os.path.exists(os.path.join(cgroup_dir, "cgroup.freeze")):
        return None, [], "cgroup-freeze-unavailable"
    try:
        if any(entry.is_dir() for entry in os.scandir(cgroup_dir)):
            return None, [], "cgroup-not-leaf"  # freezing it would freeze its children too
    except OSError:
        return None, [], "cgroup-unreadable"
    procs = read_cgroup_procs(cgroup_dir)
    if not procs or not set(procs) <= available:
        return None, [], "cgroup-shared"  # someone in there is protected, never-stop or out of scope
    return cgroup_dir, procs, None


def plan_units(
    classification: Classification,
    method: FreezeMethod,
    excluded: AbstractSet[int] = frozenset(),
) -> list[StopUnit]:
    """Candidate units, largest resident set first."""
    available = {
        pid
        for pid in classification.pids(Category.DISTINCT)
        if pid not in excluded and pid in classification.infos
    }
    units: list[StopUnit] = []
    fallback_note: dict[int, str] = {}

    if method is FreezeMethod.CGROUP:
        mount = cgroup2_mount()
        by_cgroup: dict[str | None, list[int]] = {}
        for pid in available:
            by_cgroup.setdefault(classification.infos[pid].cgroup, []).append(pid)
        for cgroup, pids in by_cgroup.items():
            cgroup_dir, procs, why_not = cgroup_exclusive(cgroup, available, mount)
            if cgroup_dir is None:
                for pid in pids:
                    fallback_note[pid] = why_not or "cgroup-unavailable"
                continue
            # The processes read when the cgroup was judged exclusive, not a second reading
            # that could include a newcomer the classification never saw.
            members = sorted(procs)
            rss, swap = _memory(classification, members)
            units.append(
                StopUnit(
                    kind=UnitKind.CGROUP,
                    key=f"cgroup:{cgroup}",
                    members=tuple(_member(classification, p) for p in members),
                    method=FreezeMethod.CGROUP,
                    cgroup_dir=cgroup_dir,
                    rss_kb=rss,
                    swap_kb=swap,
                )
            )
            available -= set(members)

    # Signals: a whole process group when all its members are available (a shell pipeline
    # stops together), process by process otherwise.
    by_pgid: dict[int, list[int]] = {}
    for pid in available:
        by_pgid.setdefault(classification.table.stats[pid].pgid, []).append(pid)
    for pgid, pids in by_pgid.items():
        group = [
            p for p in classification.table.group_members(pgid) if not classification.table.stats[p].is_zombie
        ]
        if len(group) > 1 and set(group) <= available:
            members = sorted(group, key=lambda p: (p != pgid, p))  # the group leader first
            rss, swap = _memory(classification, members)
            notes = {fallback_note[p] for p in members if p in fallback_note}
            units.append(
                StopUnit(
                    kind=UnitKind.PROCESS_GROUP,
                    key=f"pgid:{pgid}",
                    members=tuple(_member(classification, p) for p in members),
                    method=FreezeMethod.SIGNAL,
                    rss_kb=rss,
                    swap_kb=swap,
                    note=",".join(sorted(notes)) or None,
                )
            )
            continue
        for pid in pids:
            rss, swap = _memory(classification, [pid])
            units.append(
                StopUnit(
                    kind=UnitKind.PROCESS,
                    key=f"pid:{pid}",
                    members=(_member(classification, pid),),
                    method=FreezeMethod.SIGNAL,
                    rss_kb=rss,
                    swap_kb=swap,
                    note=fallback_note.get(pid),
                )
            )
    units.sort(key=lambda u: (-u.rss_kb, u.key))
    return units
