"""Freezing: one small interface, two implementations (SIGSTOP/SIGCONT and cgroup v2 freeze)."""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Protocol

from .config import FreezeMethod
from .procs import read_stat
from .units import Member, StopUnit

log = logging.getLogger(__name__)


@dataclass
class FreezeResult:
    done: list[Member] = field(default_factory=list)
    gone: list[Member] = field(default_factory=list)  # no such pid any more
    recycled: list[Member] = field(default_factory=list)  # pid now belongs to another process

    def merge(self, other: FreezeResult) -> FreezeResult:
        self.done += other.done
        self.gone += other.gone
        self.recycled += other.recycled
        return self


class Freezer(Protocol):
    def freeze(self, unit: StopUnit) -> FreezeResult: ...

    def thaw(self, unit: StopUnit) -> FreezeResult: ...


def _identity(member: Member) -> str:
    """'same', 'gone' or 'recycled': is member.pid still the process we recorded?"""
    stat = read_stat(member.pid)
    if stat is None or stat.is_zombie:
        return "gone"
    if stat.starttime != member.starttime:
        return "recycled"
    return "same"


def _sort(result: FreezeResult, member: Member) -> bool:
    identity = _identity(member)
    if identity == "gone":
        result.gone.append(member)
    elif identity == "recycled":
        result.recycled.append(member)
    return identity == "same"


class SignalFreezer:
    """SIGSTOP/SIGCONT, each member checked by start time just before it is signalled."""

    def _send(self, unit: StopUnit, signum: int) -> FreezeResult:
        result = FreezeResult()
        for member in unit.members:
            if not _sort(result, member):
                continue
            try:
                os.kill(member.pid, signum)
            except ProcessLookupError:
                result.gone.append(member)
                continue
            result.done.append(member)
        return result

    def freeze(self, unit: StopUnit) -> FreezeResult:
        return self._send(unit, signal.SIGSTOP)

    def thaw(self, unit: StopUnit) -> FreezeResult:
        return self._send(unit, signal.SIGCONT)


def read_frozen(cgroup_dir: str) -> bool | None:
    try:
        with open(os.path.join(cgroup_dir, "cgroup.events"), encoding="ascii") as handle:
            for line in handle:
                key, _, value = line.partition(" ")
                if key == "frozen":
                    return value.strip() == "1"
    except OSError:
        return None
    return None


class CgroupFreezer:
    """cgroup v2 `cgroup.freeze`; waits (bounded) for `frozen 1/0` in `cgroup.events`."""

    def __init__(self, settle_timeout: float = 1.0) -> None:
        # Tasks in uninterruptible sleep (likely under memory pressure) freeze late; do not
        # block the daemon for them -- the kernel completes the freeze on its own.
        self.settle_timeout = settle_timeout

    def _set(self, unit: StopUnit, frozen: bool) -> FreezeResult:
        result = FreezeResult()
        assert unit.cgroup_dir is not None
        live = [m for m in unit.members if _sort(result, m)]
        try:
            with open(os.path.join(unit.cgroup_dir, "cgroup.freeze"), "w", encoding="ascii") as handle:
                handle.write("1" if frozen else "0")
        except FileNotFoundError:
            # The cgroup was removed, hence empty: nothing left to (un)freeze.
            result.gone += live
            return result
        deadline = time.monotonic() + self.settle_timeout
        while read_frozen(unit.cgroup_dir) is not frozen and time.monotonic() < deadline:
            time.sleep(0.005)
        if read_frozen(unit.cgroup_dir) is not frozen:
            log.warning("cgroup %s not %s yet after %.1fs", unit.cgroup_dir, "frozen" if frozen else "thawed", self.settle_timeout)
        result.done += live
        return result

    def freeze(self, unit: StopUnit) -> FreezeResult:
        return self._set(unit, True)

    def thaw(self, unit: StopUnit) -> FreezeResult:
        return self._set(unit, False)


_FREEZERS: dict[FreezeMethod, Freezer] = {
    FreezeMethod.SIGNAL: SignalFreezer(),
    FreezeMethod.CGROUP: CgroupFreezer(),
}


class DryRunFreezer:
    """--dry-run: every decision is made and logged, nothing is signalled or frozen."""

    def freeze(self, unit: StopUnit) -> FreezeResult:
        return FreezeResult(done=list(unit.members))

    def thaw(self, unit: StopUnit) -> FreezeResult:
        return FreezeResult(done=list(unit.members))


def freezer_for(unit: StopUnit) -> Freezer:
    return _FREEZERS[unit.method]
