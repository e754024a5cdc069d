"""Paging a stopped unit's memory out at once, on a thread of its own (never the decision loop).

SIGSTOP (or a freeze) frees nothing: the stopped pages stay resident until the kernel's global
reclaim finds them -- while it also evicts the protected workload's working set. So once a unit
is stopped, the daemon reclaims its memory deliberately:

* `memory.reclaim` of the unit's own cgroup (cgroup v2, kernel >= 5.19, a memory controller on
  that cgroup) when the unit is a cgroup;
* else `process_madvise(pidfd, ..., MADV_PAGEOUT)` over each member's mappings (kernel >= 5.10),
  through a pidfd pinned by start time (a recycled pid is never touched);
* else nothing, and the `page-out` event says why.

Work goes in bounded chunks (CHUNK_KB), and a cancel (the unit is resumed, gone, or the daemon
exits) is seen between two chunks, so a page-out of a big unit never holds anything up: the
loop only queues the job. If pressure falls meanwhile the page-out goes on -- the unit's pages
are idle until it is resumed, and a resume (after --hold of calm) cancels what is left.
A resume pages nothing back in by force: the process faults in what it touches.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import events as ev
from .config import PageOutVia
from .events import EventLog
from .freezer import PinnedProcess
from .procs import is_same_process, read_memory
from .reading import PressureReading
from .units import Member, StopUnit

log = logging.getLogger(__name__)

CHUNK_KB = 16 * 1024  # per memory.reclaim write / process_madvise call: the cancel latency
# process_madvise skips a large folio (a THP, a large page-cache folio) that a range covers only
# in part: madvise ranges are whole multiples of this, aligned to it.
MADVISE_ALIGN_KB = 2 * 1024
RECLAIM_FLOOR_KB = 1024  # below this a cgroup's charge is kernel memory, not worth another write
MADV_PAGEOUT = 21
SYS_PROCESS_MADVISE = 440  # x86_64 and the asm-generic table (arm64) alike
SPECIAL_MAPPINGS = ("[vsyscall]", "[vvar]", "[vdso]", "[vvar_vclock]")
CLOSE_TIMEOUT = 5.0

VIA_RECLAIM = "memory.reclaim"
VIA_MADVISE = "process_madvise"
VIA_NONE = "none"


class Cancelled(Exception):
    """Raised by a page-out's check between two chunks once it is cancelled."""


class _Unavailable(Exception):
    pass


@dataclass
class PageOutJob:
    unit: StopUnit
    reading: PressureReading | None  # when it was decided (the event's `pressure`)
    queued_at: float = field(default_factory=time.monotonic)
    cancel_reason: str | None = None


@dataclass
class PageOutResult:
    via: str = VIA_NONE
    outcome: str = "done"  # done, cancelled:<reason>, gone, unavailable, error
    chunks: int = 0
    asked_kb: int = 0  # what the chunks asked the kernel to page out, together
    notes: list[str] = field(default_factory=list)
    cgroup_before_kb: int | None = None
    cgroup_after_kb: int | None = None


def unit_memory(members: tuple[Member, ...]) -> tuple[int, int]:
    """(VmRSS, VmSwap) of the members still alive, in kB."""
    rss = swap = 0
    for member in members:
        if is_same_process(member.pid, member.starttime):
            usage = read_memory(member.pid)
            rss += usage.rss_kb
            swap += usage.swap_kb
    return rss, swap


def swap_total_kb(path: str = "/proc/meminfo") -> int | None:
    try:
        with open(path, encoding="ascii") as handle:
            for line in handle:
                if line.startswith("SwapTotal:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# == memory.reclaim ===============================================================================


def reclaim_file(cgroup_dir: str | None) -> str | None:
    if cgroup_dir is None:
        return None
    path = os.path.join(cgroup_dir, "memory.reclaim")
    return path if os.path.exists(path) else None


def _read_kb(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as handle:
            return int(handle.read().split()[0]) // 1024
    except (OSError, ValueError, IndexError):
        return None


def reclaim_cgroup(cgroup_dir: str, chunk_kb: int, check: Callable[[], None], result: PageOutResult) -> None:
    """Write memory.reclaim in chunks until the cgroup's charge is at the floor or the kernel
    can reclaim no more (EAGAIN)."""
    current_path = os.path.join(cgroup_dir, "memory.current")
    start = _read_kb(current_path)
    result.cgroup_before_kb = start
    # A bound in case something keeps charging the cgroup (a newcomer that is not stopped).
    budget = (start or 0) // chunk_kb + 8
    fd = os.open(os.path.join(cgroup_dir, "memory.reclaim"), os.O_WRONLY | os.O_CLOEXEC)
    try:
        while result.chunks < budget:
            check()
            current = _read_kb(current_path)
            if current is None:
                result.outcome = "gone"  # the cgroup was removed
                break
            if current <= RECLAIM_FLOOR_KB:
                break
            ask = min(chunk_kb, current)
            try:
                os.write(fd, f"{ask}K".encode())
            except OSError as exc:
                if exc.errno == errno.EAGAIN:
                    break  # reclaimed what it could: the rest is in use or unreclaimable
                if exc.errno == errno.EINTR:
                    continue
                raise
            finally:
                result.chunks += 1
                result.asked_kb += ask
    finally:
        os.close(fd)
        result.cgroup_after_kb = _read_kb(current_path)


# == process_madvise ==============================================================================


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


_libc: Any = None


def _syscall() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc.syscall


def process_madvise(pidfd: int, start: int, length: int, advice: int = MADV_PAGEOUT) -> int:
    """Bytes advised; OSError on failure (ENOSYS: the kernel has no process_madvise)."""
    iov = _IoVec(start, length)
    done = _syscall()(ctypes.c_long(SYS_PROCESS_MADVISE), ctypes.c_int(pidfd), ctypes.byref(iov),
                      ctypes.c_size_t(1), ctypes.c_int(advice), ctypes.c_uint(0))
    if done < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return int(done)


def mappings(pid: int) -> list[tuple[int, int]]:
    """The address ranges of a process's mappings (the kernel's special ones left out)."""
    ranges = []
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].strip() in SPECIAL_MAPPINGS:
                    continue
                low, _, high = parts[0].partition("-")
                ranges.append((int(low, 16), int(high, 16)))
    except OSError:
        return []
    return ranges


def madvise_member(member: Member, chunk_kb: int, check: Callable[[], None], result: PageOutResult) -> bool:
    """Page out one process's mappings; False if it is gone (or its pid recycled)."""
    pinned = PinnedProcess.pin(member)
    if not isinstance(pinned, PinnedProcess):
        return False
    step = chunk_kb * 1024
    try:
        for low, high in mappings(member.pid):
            start = low
            while start < high:
                end = min(high, (start // step + 1) * step)  # chunk boundaries aligned to the step
                check()
                try:
                    process_madvise(pinned.pidfd, start, end - start)
                except OSError as exc:
                    if exc.errno in (errno.ENOSYS, errno.EPERM) and result.chunks == 0:
                        raise _Unavailable(f"process_madvise: {exc.strerror}") from None
                    if exc.errno == errno.ESRCH:
                        return False
                    if exc.errno in (errno.EINVAL, errno.ENOMEM, errno.EFAULT):
                        break  # a locked, PFN or hugetlb mapping, or one unmapped since: skip it
                    raise
                finally:
                    result.chunks += 1
                    result.asked_kb += (end - start) // 1024
                start = end
    finally:
        pinned.close()
    return True


# == the thread ===================================================================================


class Pager:
    """One worker thread, jobs in the order of the stops; `cancel` is honoured between chunks."""

    def __init__(self, events: EventLog, via: PageOutVia = PageOutVia.AUTO, chunk_kb: int = CHUNK_KB) -> None:
        self.events = events
        self.via = via
        self.chunk_kb = max(MADVISE_ALIGN_KB, chunk_kb // MADVISE_ALIGN_KB * MADVISE_ALIGN_KB)
        self._jobs: collections.deque[PageOutJob] = collections.deque()
        self._current: PageOutJob | None = None
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="page-out", daemon=True)

    def start(self) -> Pager:
        self._thread.start()
        return self

    def submit(self, unit: StopUnit, reading: PressureReading | None) -> None:
        with self._cond:
            self._jobs.append(PageOutJob(unit, reading))
            self._cond.notify()

    def cancel(self, key: str, reason: str) -> None:
        """Stop paging out this unit (it is being resumed, or is gone): a queued job is dropped
        (with its event), the running one ends after its current chunk."""
        dropped = []
        with self._cond:
            for job in list(self._jobs):
                if job.unit.key == key:
                    self._jobs.remove(job)
                    dropped.append(job)
            if self._current is not None and self._current.unit.key == key:
                self._current.cancel_reason = reason
        for job in dropped:
            self._emit(job, PageOutResult(outcome=f"cancelled:{reason}"), (0, 0), (0, 0), 0.0, 0.0)

    def busy(self) -> bool:
        with self._cond:
            return bool(self._jobs) or self._current is not None

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        with self._cond:
            self._closing = True
            for job in self._jobs:
                job.cancel_reason = "exit"
            if self._current is not None:
                self._current.cancel_reason = "exit"
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- worker ----------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closing:
                    self._cond.wait()
                if not self._jobs:
                    return
                job = self._current = self._jobs.popleft()
            try:
                self._page_out(job)
            except Exception:  # a page-out must never take the daemon down
                log.exception("page-out of %s failed", job.unit.key)
            finally:
                with self._cond:
                    self._current = None

    def _check(self, job: PageOutJob) -> Callable[[], None]:
        def check() -> None:
            if job.cancel_reason is not None:
                raise Cancelled()
        return check

    def _page_out(self, job: PageOutJob) -> None:
        unit, result = job.unit, PageOutResult()
        started = time.monotonic()
        before = unit_memory(unit.members)
        check = self._check(job)
        if swap_total_kb() == 0:
            result.notes.append("no swap: anonymous pages cannot leave RAM")
        try:
            self._dispatch(unit, check, result)
        except Cancelled:
            result.outcome = f"cancelled:{job.cancel_reason}"
        except _Unavailable as exc:
            result.via, result.outcome = VIA_NONE, "unavailable"
            result.notes.append(str(exc))
        except OSError as exc:
            result.outcome = "error"
            result.notes.append(f"{result.via}: {exc.strerror or exc}")
        after = unit_memory(unit.members)
        self._emit(job, result, before, after, started - job.queued_at, time.monotonic() - started)

    def _dispatch(self, unit: StopUnit, check: Callable[[], None], result: PageOutResult) -> None:
        reclaim = reclaim_file(unit.cgroup_dir)
        if self.via is PageOutVia.RECLAIM or (self.via is PageOutVia.AUTO and reclaim is not None):
            if reclaim is None or unit.cgroup_dir is None:
                raise _Unavailable(f"no memory.reclaim for {unit.key} (not a cgroup unit, or no memory "
                                   "controller on its cgroup, or a kernel before 5.19)")
            result.via = VIA_RECLAIM
            reclaim_cgroup(unit.cgroup_dir, self.chunk_kb, check, result)
            return
        result.via = VIA_MADVISE
        alive = [madvise_member(member, self.chunk_kb, check, result) for member in unit.members]
        if not any(alive):
            result.outcome = "gone"

    def _emit(self, job: PageOutJob, result: PageOutResult, before: tuple[int, int], after: tuple[int, int],
              queued: float, took: float) -> None:
        unit = job.unit
        leader = unit.members[0] if unit.members else None
        extra: dict[str, Any] = {}
        if result.cgroup_before_kb is not None:
            extra.update(cgroup_before_kb=result.cgroup_before_kb, cgroup_after_kb=result.cgroup_after_kb)
        self.events.emit(
            ev.PAGE_OUT,
            pid=leader.pid if leader else None,
            comm=unit.comm,
            reason="stopped",
            pressure=job.reading,
            unit=unit.key,
            via=result.via,
            outcome=result.outcome,
            freed_kb=max(0, before[0] - after[0]),
            rss_before_kb=before[0],
            rss_after_kb=after[0],
            swap_after_kb=after[1],
            ms=round(took * 1000, 1),
            queued_ms=round(queued * 1000, 1),
            chunks=result.chunks,
            asked_kb=result.asked_kb,
            note="; ".join(result.notes) or None,
            **extra,
        )
        log.info("page-out of %s via %s: %s, freed %d kB in %.0f ms", unit.key, result.via, result.outcome,
                 max(0, before[0] - after[0]), took * 1000)


__all__ = ["Cancelled", "Pager", "PageOutResult", "process_madvise", "reclaim_cgroup"]
