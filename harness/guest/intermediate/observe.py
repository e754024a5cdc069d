"""Reading what the decision core asks for: a scan of the classified processes (with the
process-group and cgroup facts unit planning needs) and the memory figures of the headroom gate."""

from __future__ import annotations

import os
from collections.abc import Iterable

from .classify import Category, Classification, Classifier
from .config import FreezeMethod
from .core import Held
from .procs import cgroup2_mount, cgroup_fs_path, is_same_process, read_mem_available_kb, read_memory
from .snapshot import DISTINCT, OUT_OF_SCOPE, CgroupFacts, Memory, Proc, Scan
from .units import StopUnit, UnitKind


def read_cgroup_procs(cgroup_dir: str) -> list[int] | None:
    try:
        with open(os.path.join(cgroup_dir, "cgroup.procs"), encoding="ascii") as handle:
            return [int(line) for line in handle.read().split()]
    except OSError:
        return None


def cgroup_facts(cgroup: str, mount: str | None, freeze: bool = True) -> CgroupFacts:
    """Can this cgroup be one unit (a leaf; to be frozen, with a cgroup.freeze file), and who is in it."""
    cgroup_dir = cgroup_fs_path(cgroup, mount) if mount is not None else None
    if cgroup_dir is None:
        return CgroupFacts(cgroup, None, "cgroup-freeze-unavailable")
    procs = tuple(read_cgroup_procs(cgroup_dir) or ())
    why_not = None
    if freeze and not os.path.exists(os.path.join(cgroup_dir, "cgroup.freeze")):
        why_not = "cgroup-freeze-unavailable"
    else:
        try:
            if any(entry.is_dir() for entry in os.scandir(cgroup_dir)):
                why_not = "cgroup-not-leaf"  # freezing it would freeze its children too
        except OSError:
            why_not = "cgroup-unreadable"
    return CgroupFacts(cgroup, cgroup_dir, why_not, procs)


class Observer:
    def __init__(self, classifier: Classifier, method: FreezeMethod) -> None:
        self.classifier = classifier
        self.method = method
        # With either method a workload's leaf cgroup is one unit: its facts are read for both.
        self._mount = cgroup2_mount()

    def classify(self) -> Classification:
        return self.classifier.classify()

    def scan(self, held: Iterable[Held]) -> tuple[Scan, Classification]:
        cls = self.classifier.classify()
        stats = cls.table.stats
        procs: dict[int, Proc] = {}
        for pid, info in cls.infos.items():
            verdict = cls.verdicts[pid]
            stat = info.stat
            if verdict.category is Category.DISTINCT:
                procs[pid] = Proc(pid, stat.starttime, stat.comm, DISTINCT, info.memory.rss_kb, info.memory.swap_kb,
                                  stat.pgid, stat.state, info.cgroup)
            else:
                procs[pid] = Proc(pid, stat.starttime, stat.comm, verdict.reason)

        groups: list[tuple[int, tuple[int, ...]]] = []
        for pgid in sorted({p.pgid for p in procs.values() if p.is_distinct}):
            members = sorted(p for p in cls.table.group_members(pgid) if not stats[p].is_zombie)
            if len(members) > 1:
                groups.append((pgid, tuple(members)))

        cgroups: dict[str, CgroupFacts] = {}
        held_units = [h.unit for h in held]
        freeze = self.method is FreezeMethod.CGROUP
        for proc in procs.values():
            if proc.is_distinct and proc.cgroup not in (None, "/") and proc.cgroup not in cgroups:
                cgroups[proc.cgroup] = cgroup_facts(proc.cgroup, self._mount, freeze)  # type: ignore[index,arg-type]
        for unit in held_units:
            if unit.kind is UnitKind.CGROUP and unit.cgroup_dir:
                path = unit.key.partition(":")[2]
                if path not in cgroups:
                    cgroups[path] = CgroupFacts(path, unit.cgroup_dir, None,
                                                tuple(read_cgroup_procs(unit.cgroup_dir) or ()))

        # Held members and frozen newcomers outside the scope: alive, but without a verdict.
        wanted = {m.pid for u in held_units for m in u.members}
        wanted.update(p for c in cgroups.values() for p in c.procs)
        for pid in wanted - procs.keys():
            stat = stats.get(pid)
            if stat is not None and not stat.is_zombie:
                procs[pid] = Proc(pid, stat.starttime, stat.comm, OUT_OF_SCOPE)
        scan = Scan(procs=tuple(procs[p] for p in sorted(procs)), groups=tuple(groups),
                    cgroups=tuple(cgroups[c] for c in sorted(cgroups)))
        return scan, cls

    @staticmethod
    def memory(units: Iterable[StopUnit]) -> Memory:
        """MemAvailable, and the VmSwap of each unit: what resuming it will page back in. (Its
        resident pages are already counted as used; requiring room for them again would keep it
        stopped for good once the balloon has deflated.)"""
        swap: dict[str, int] = {}
        for unit in units:
            swap[unit.key] = sum(read_memory(m.pid).swap_kb for m in unit.members
                                 if is_same_process(m.pid, m.starttime))
        return Memory(available_kb=read_mem_available_kb(), swap_kb=tuple(sorted(swap.items())))
