"""What the decision core is given: plain frozen values, and their compact form in the event log.

An `Observation` is one decision's input: the time, the pressure reading and -- only when the
core asks for them -- a `Scan` of the classified processes and the `Memory` the headroom gate
needs. The daemon writes each observation it decided on as an `input` record of the event log
(`InputEncoder`), so `replay` can give the core the very same values (`InputDecoder`).

Process entries are delta-coded between scans (only new or changed entries, and the pids that
left): the protected and never-stop processes of a guest are written once, not every second.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .reading import PressureReading
from .units import Member, StopUnit

DISTINCT = "distinct"
# A process the core may need to know about (a member of a unit it holds, a newcomer in a frozen
# cgroup) that is not in the daemon's scope: it is alive, but has no verdict.
OUT_OF_SCOPE = "out-of-scope"
STOPPED_STATES = ("T", "t")
# Never stopped on its own, but part of its workload: a process that only opted out of the OOM
# killer (stress-ng's parent sets oom_score_adj -1000 on itself) is stopped with the distinct
# processes of its leaf cgroup (plan.py) -- else the workload's own timer kills its stopped workers.
JOINS_WORKLOAD = frozenset({"never-stop:oom-score-adj"})


@dataclass(frozen=True)
class Proc:
    """One live (non-zombie) process as classified. Size, group, state and cgroup are only
    kept for distinct processes: nothing else is ever a candidate."""

    pid: int
    starttime: int
    comm: str
    reason: str  # the verdict's reason: "distinct", "protected:core", "never-stop:sshd", ... or OUT_OF_SCOPE
    rss_kb: int = 0
    swap_kb: int = 0
    pgid: int = 0
    state: str = "S"
    cgroup: str | None = None

    @property
    def is_distinct(self) -> bool:
        return self.reason == DISTINCT

    @property
    def in_scope(self) -> bool:
        return self.reason != OUT_OF_SCOPE

    @property
    def joins_workload(self) -> bool:
        return self.reason in JOINS_WORKLOAD

    @property
    def is_stopped(self) -> bool:
        return self.state in STOPPED_STATES

    def member(self) -> Member:
        return Member(pid=self.pid, starttime=self.starttime, comm=self.comm)

    def encode(self) -> list[Any]:
        head = [self.pid, self.starttime, self.comm, self.reason]
        if not self.is_distinct:
            return head
        return head + [self.rss_kb, self.swap_kb, self.pgid, self.state, self.cgroup]

    @classmethod
    def decode(cls, item: list[Any]) -> Proc:
        pid, starttime, comm, reason = int(item[0]), int(item[1]), str(item[2]), str(item[3])
        if len(item) == 4:
            return cls(pid, starttime, comm, reason)
        rss, swap, pgid, state, cgroup = item[4:9]
        return cls(pid, starttime, comm, reason, int(rss), int(swap), int(pgid), str(state), cgroup)


@dataclass(frozen=True)
class CgroupFacts:
    """What the filesystem says about one cgroup v2 directory."""

    path: str  # the hierarchy path, e.g. /system.slice/x.service
    dir: str | None  # its filesystem path (None: no cgroup2 mount)
    why_not: str | None  # why it cannot be frozen as a unit: cgroup-freeze-unavailable, cgroup-not-leaf, ...
    procs: tuple[int, ...] = ()  # cgroup.procs (empty if unreadable)

    def encode(self) -> list[Any]:
        return [self.path, self.dir, self.why_not, list(self.procs)]

    @classmethod
    def decode(cls, item: list[Any]) -> CgroupFacts:
        return cls(path=item[0], dir=item[1], why_not=item[2], procs=tuple(int(p) for p in item[3]))


@dataclass(frozen=True)
class Scan:
    procs: tuple[Proc, ...]  # sorted by pid
    # pgid -> every live member (in scope or not), for the groups of distinct processes that
    # have more than one member; a pgid not listed is a group of one.
    groups: tuple[tuple[int, tuple[int, ...]], ...] = ()
    cgroups: tuple[CgroupFacts, ...] = ()  # --method cgroup: candidates' cgroups and held cgroups

    @functools.cached_property
    def by_pid(self) -> Mapping[int, Proc]:
        return {p.pid: p for p in self.procs}

    @functools.cached_property
    def _groups(self) -> Mapping[int, tuple[int, ...]]:
        return dict(self.groups)

    @functools.cached_property
    def _cgroups(self) -> Mapping[str, CgroupFacts]:
        return {c.path: c for c in self.cgroups}

    def proc(self, pid: int) -> Proc | None:
        return self.by_pid.get(pid)

    def group(self, pgid: int) -> tuple[int, ...]:
        return self._groups.get(pgid, ())

    def cgroup(self, path: str | None) -> CgroupFacts | None:
        return None if path is None else self._cgroups.get(path)

    def alive(self, member: Member) -> bool:
        """Is the member still the process it was (same pid and start time, not a zombie)?"""
        proc = self.by_pid.get(member.pid)
        return proc is not None and proc.starttime == member.starttime

    def distinct(self) -> list[Proc]:
        return [p for p in self.procs if p.is_distinct]


@dataclass(frozen=True)
class Memory:
    """For the headroom gate: MemAvailable, and each held unit's swapped-out pages (VmSwap)."""

    available_kb: int
    swap_kb: tuple[tuple[str, int], ...] = ()  # unit key -> VmSwap of its live members

    def swap_of(self, unit: StopUnit) -> int:
        return dict(self.swap_kb).get(unit.key, 0)


@dataclass(frozen=True)
class Observation:
    now: float  # time.monotonic(), rounded to the millisecond (as logged)
    wall: float  # time.time(), for the records' `since`
    reading: PressureReading | None  # None: no valid reading
    scan: Scan | None = None
    memory: Memory | None = None


# == the event log's `input` record ==============================================================


class InputEncoder:
    """Observations as compact JSON-ready dicts; process entries delta-coded against the last scan."""

    def __init__(self) -> None:
        self._known: dict[int, list[Any]] = {}

    def encode_scan(self, scan: Scan) -> dict[str, Any]:
        current = {p.pid: p.encode() for p in scan.procs}
        changed = [entry for pid, entry in current.items() if self._known.get(pid) != entry]
        gone = sorted(pid for pid in self._known if pid not in current)
        self._known = current
        record: dict[str, Any] = {"procs": changed}
        if gone:
            record["gone"] = gone
        if scan.groups:
            record["groups"] = {str(pgid): list(pids) for pgid, pids in scan.groups}
        if scan.cgroups:
            record["cgroups"] = [c.encode() for c in scan.cgroups]
        return record

    def encode(self, obs: Observation) -> dict[str, Any]:
        fields: dict[str, Any] = {"m": obs.now, "p": obs.reading.as_list() if obs.reading is not None else None}
        if obs.scan is not None:
            fields["scan"] = self.encode_scan(obs.scan)
        if obs.memory is not None:
            fields["mem"] = {"avail": obs.memory.available_kb, "swap": dict(obs.memory.swap_kb)}
        return fields


class InputDecoder:
    """The inverse of InputEncoder, fed the records of one daemon run in order."""

    def __init__(self) -> None:
        self._known: dict[int, Proc] = {}

    def decode_scan(self, record: Mapping[str, Any]) -> Scan:
        for pid in record.get("gone", ()):
            self._known.pop(int(pid), None)
        for item in record.get("procs", ()):
            proc = Proc.decode(item)
            self._known[proc.pid] = proc
        groups = tuple(sorted((int(k), tuple(int(p) for p in v)) for k, v in record.get("groups", {}).items()))
        cgroups = tuple(CgroupFacts.decode(c) for c in record.get("cgroups", ()))
        return Scan(procs=tuple(self._known[p] for p in sorted(self._known)), groups=groups, cgroups=cgroups)

    def decode(self, record: Mapping[str, Any]) -> Observation:
        p = record.get("p")
        scan = self.decode_scan(record["scan"]) if "scan" in record else None
        mem = record.get("mem")
        memory = None
        if mem is not None:
            memory = Memory(available_kb=int(mem["avail"]),
                            swap_kb=tuple(sorted((str(k), int(v)) for k, v in mem.get("swap", {}).items())))
        return Observation(now=float(record["m"]), wall=float(record.get("t", 0.0)),
                           reading=PressureReading.from_list(p) if p is not None else None,
                           scan=scan, memory=memory)


def members_of(items: Iterable[Iterable[Any]]) -> tuple[Member, ...]:
    """Members from the [pid, starttime, comm] triples of stop events."""
    return tuple(Member(pid=int(pid), starttime=int(start), comm=str(comm)) for pid, start, comm in items)
