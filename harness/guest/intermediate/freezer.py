"""Freezing: one small interface, two implementations (SIGSTOP/SIGCONT and cgroup v2 freeze).

Every signal goes through a pidfd opened *before* the start-time check: once the check passed,
the pidfd can only reach that process, so a pid recycled between the check and the signal is
never signalled (with kill(2) it would be).
"""

from __future__ import annotations

import enum
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Protocol

from .config import FreezeMethod
from .procs import read_stat
from .units import Member, StopUnit, UnitKind

log = logging.getLogger(__name__)


@dataclass
class FreezeResult:
    done: list[Member] = field(default_factory=list)
    gone: list[Member] = field(default_factory=list)  # no such process any more
    recycled: list[Member] = field(default_factory=list)  # pid now belongs to another process
    failed: list[Member] = field(default_factory=list)  # alive, but the signal or write failed
    errors: list[str] = field(default_factory=list)  # why, for the failed ones
    # A frozen cgroup's tasks that are not members (forked or moved in since the scan): frozen too.
    newcomers: list[int] = field(default_factory=list)

    def merge(self, other: FreezeResult) -> FreezeResult:
        self.done += other.done
        self.gone += other.gone
        self.recycled += other.recycled
        self.failed += other.failed
        self.errors += other.errors
        self.newcomers += other.newcomers
        return self

    def fail(self, member: Member, exc: OSError) -> None:
        self.failed.append(member)
        self.errors.append(f"{member.pid}: {exc.strerror or exc}")


class Freezer(Protocol):
    def freeze(self, unit: StopUnit) -> FreezeResult: ...

    def thaw(self, unit: StopUnit) -> FreezeResult: ...


class Identity(enum.Enum):
    SAME = "same"
    GONE = "gone"
    RECYCLED = "recycled"


def identity(member: Member) -> Identity:
    """Is member.pid still the process we recorded?"""
    stat = read_stat(member.pid)
    if stat is None or stat.is_zombie:
        return Identity.GONE
    if stat.starttime != member.starttime:
        return Identity.RECYCLED
    return Identity.SAME


class PinnedProcess:
    """A member held by a pidfd that was opened before its start time was checked."""

    def __init__(self, member: Member, pidfd: int) -> None:
        self.member = member
        self.pidfd = pidfd

    @classmethod
    def pin(cls, member: Member) -> PinnedProcess | Identity:
        """The pinned process, or why not (GONE, RECYCLED)."""
        try:
            pidfd = os.pidfd_open(member.pid)
        except ProcessLookupError:
            return Identity.GONE
        found = identity(member)
        if found is not Identity.SAME:
            os.close(pidfd)
            return found
        return cls(member, pidfd)

    def send(self, signum: int) -> None:
        """ProcessLookupError if the process has exited since it was pinned."""
        signal.pidfd_send_signal(self.pidfd, signum)

    def close(self) -> None:
        os.close(self.pidfd)


class SignalFreezer:
    """SIGSTOP/SIGCONT through pidfds, each member checked by start time before it is signalled."""

    def _send(self, unit: StopUnit, signum: int) -> FreezeResult:
        result = FreezeResult()
        for member in unit.members:
            try:
                pinned = PinnedProcess.pin(member)
            except OSError as exc:  # EMFILE and the like: we could not even look
                result.fail(member, exc)
                continue
            if pinned is Identity.GONE:
                result.gone.append(member)
                continue
            if pinned is Identity.RECYCLED:
                result.recycled.append(member)
                continue
            assert isinstance(pinned, PinnedProcess)
            try:
                pinned.send(signum)
            except ProcessLookupError:
                result.gone.append(member)
                continue
            except OSError as exc:  # EPERM: it is alive and still stopped (or running)
                result.fail(member, exc)
                continue
            finally:
                pinned.close()
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


def _cgroup_tasks(cgroup_dir: str) -> list[int] | None:
    try:
        with open(os.path.join(cgroup_dir, "cgroup.procs"), encoding="ascii") as handle:
            return [int(line) for line in handle.read().split()]
    except FileNotFoundError:
        return []  # removed, hence empty
    except OSError:
        return None


class CgroupFreezer:
    """cgroup v2 `cgroup.freeze`; waits (bounded) for `frozen 1/0` in `cgroup.events`.

    The unit is the cgroup, not the processes the scan found in it: after a freeze, whatever is
    in the cgroup is frozen (`done` are the members still there, `newcomers` the others), and a
    thaw always writes `cgroup.freeze`, even when no recorded member is left.
    """

    def __init__(self, settle_timeout: float = 1.0) -> None:
        # Tasks in uninterruptible sleep (likely under memory pressure) freeze late; do not
        # block the daemon for them -- the kernel completes the freeze on its own.
        self.settle_timeout = settle_timeout

    def _set(self, unit: StopUnit, frozen: bool) -> FreezeResult:
        result = FreezeResult()
        assert unit.cgroup_dir is not None
        live = []
        for member in unit.members:
            found = identity(member)
            if found is Identity.SAME:
                live.append(member)
            else:
                (result.gone if found is Identity.GONE else result.recycled).append(member)
        try:
            with open(os.path.join(unit.cgroup_dir, "cgroup.freeze"), "w", encoding="ascii") as handle:
                handle.write("1" if frozen else "0")
        except FileNotFoundError:
            # The cgroup was removed, hence empty: nothing left to (un)freeze.
            result.gone += live
            return result
        except OSError as exc:
            # The cgroup is the unit: it stays recorded (all its members failed) until a write works.
            result.gone, result.recycled = [], []
            for member in unit.members:
                result.fail(member, exc)
            return result
        deadline = time.monotonic() + self.settle_timeout
        while read_frozen(unit.cgroup_dir) is not frozen and time.monotonic() < deadline:
            time.sleep(0.005)
        if read_frozen(unit.cgroup_dir) is not frozen:
            log.warning("cgroup %s not %s yet after %.1fs", unit.cgroup_dir, "frozen" if frozen else "thawed", self.settle_timeout)
        result.done += live
        if frozen:
            known = {m.pid for m in live}
            result.newcomers = [p for p in _cgroup_tasks(unit.cgroup_dir) or () if p not in known]
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


def is_cgroup_unit(unit: StopUnit) -> bool:
    return unit.kind is UnitKind.CGROUP and unit.cgroup_dir is not None
