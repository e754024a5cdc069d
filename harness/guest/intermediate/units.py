"""Stop units: what is stopped together (a process, a whole process group, or a cgroup).
Plain values; planning them is plan.py, reading what they need is observe.py."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .config import FreezeMethod

if TYPE_CHECKING:
    from .procs import ProcStat


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
