"""What guests cost the host: CPU time of their QEMU processes over a window, and their memory
counted so that pages several guests share are counted once. Pure readings of /proc; the
bench decides what to run and when."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.machine.base import ProcessMemory

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, proc: Path = Path("/proc")) -> float | None:
    """utime + stime of every thread of `pid` (QEMU's vCPU threads included), in seconds."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass(frozen=True)
class CpuWindow:
    seconds: float
    #: Percent of one host core, per process.
    percent: tuple[float, ...]

    @property
    def mean_percent(self) -> float:
        return statistics.fmean(self.percent) if self.percent else float("nan")


def measure_cpu(pids: Sequence[int], window_s: float) -> CpuWindow:
    """Each process's share of one core over `window_s` (a measurement window, not a wait for
    anything)."""
    before = [cpu_seconds(pid) for pid in pids]
    started = time.monotonic()
    time.sleep(window_s)
    after = [cpu_seconds(pid) for pid in pids]
    elapsed = time.monotonic() - started
    percent = tuple(round(100 * (b - a) / elapsed, 2) for a, b in zip(before, after, strict=True)
                    if a is not None and b is not None)
    return CpuWindow(round(elapsed, 2), percent)


@dataclass(frozen=True)
class GroupMemory:
    """Memory of a group of guests: `total_mib` is the sum of their PSS (every shared page
    split between the processes that map it, so the sum counts it once); `private_mib` the
    sum of their anonymous pages; `rss_sum_mib` what adding up RSS would claim."""

    guests: int
    total_mib: float
    private_mib: float
    shared_file_mib: float
    rss_sum_mib: float


def group_memory(readings: Sequence[ProcessMemory]) -> GroupMemory:
    pss = [r.pss_mib if r.pss_mib is not None else r.rss_mib for r in readings]
    shared = [r.pss_file_mib if r.pss_file_mib is not None else r.rss_file_mib for r in readings]
    return GroupMemory(guests=len(readings), total_mib=round(sum(pss), 1),
                       private_mib=round(sum(r.rss_anon_mib for r in readings), 1),
                       shared_file_mib=round(sum(shared), 1),
                       rss_sum_mib=round(sum(r.rss_mib for r in readings), 1))
