"""The host side of a running scenario, sampled every 0.5 s on one thread: the budget cgroup,
the host swap file, and per guest its QEMU (RSS, VmSwap, alive) and balloon (target,
`actual`, guest statistics). Each sample is appended to the ledger at once and kept as the
history a balloon policy decides on. A QEMU that exits is recorded once, with whether the
host OOM killer took it (the cgroup's oom_kill counter rose) — never raised."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.balloon import BalloonController
from harness.errors import HarnessError
from harness.host.budget import HostBudget
from harness.host.kmsg import KernelLog
from harness.ledger import HOST_ROW
from harness.machine.base import Machine
from harness.policy.base import GuestStats, GuestView, HostSample, PolicyInput
from harness.scenario.evidence import JsonlAppender

log = logging.getLogger(__name__)

#: Samples kept per guest for policies (MOM averages 10).
HISTORY = 120


@dataclass
class GuestHandle:
    """One running guest as the monitor and the policy see it."""

    name: str
    machine: Machine
    controller: BalloonController
    min_mib: float
    target_mib: float | None = None
    samples: collections.deque = field(default_factory=lambda: collections.deque(maxlen=HISTORY))
    died_at: float | None = None
    #: QEMU's pid on the host, taken while it runs (libvirt's pid file goes with the domain).
    pid: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def alive(self) -> bool:
        return self.died_at is None

    def set_target(self, mib: float) -> None:
        self.controller.set_target(mib)
        self.target_mib = mib

    def view(self) -> GuestView:
        with self.lock:
            samples = tuple(self.samples)
        return GuestView(self.name, float(self.controller.balloon.max_mib), self.min_mib, self.target_mib,
                         samples, self.alive)


def host_meminfo_sample(t: float) -> HostSample:
    """No budget: the host itself, as MOM reads it (MemFree + Buffers + Cached of MemTotal)."""
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0]) / 1024
    free = values.get("MemFree", 0) + values.get("Buffers", 0) + values.get("Cached", 0)
    return HostSample(t, values.get("MemTotal", 0), free,
                      values.get("SwapTotal", 0) - values.get("SwapFree", 0))


class HostMonitor(threading.Thread):
    def __init__(self, guests: list[GuestHandle], budget: HostBudget | None, ledger: JsonlAppender,
                 record: Callable[[dict], None], interval: float = 0.5) -> None:
        super().__init__(name="host-monitor", daemon=True)
        self.guests = guests
        self.budget = budget
        self.ledger = ledger
        self.record = record
        self.interval = interval
        self.host_history: collections.deque[HostSample] = collections.deque(maxlen=HISTORY)
        self._halt = threading.Event()
        self._kills_blamed = 0
        #: Kills the kernel log attributes to the budget (pid -> guest name or None).
        self.kernel_kills: dict[int, str | None] = {}
        self.kmsg = KernelLog.open() if budget is not None else None
        self.error: BaseException | None = None

    def stop(self) -> None:
        self._halt.set()
        self.join(15)
        if self.kmsg is not None:
            self.kmsg.close()
            self.kmsg = None

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                self.sample_once()
                self._halt.wait(self.interval)  # the sampling period
        except BaseException as exc:  # reported by the runner; the run's evidence stays
            log.exception("host monitor failed")
            self.error = exc

    def policy_input(self, t0: float) -> PolicyInput:
        return PolicyInput(time.time() - t0, tuple(self.host_history), tuple(g.view() for g in self.guests))

    def sample_once(self) -> None:
        now = time.time()
        for guest in self.guests:
            if guest.alive and guest.pid is None:
                guest.pid = guest.machine.host_pid()
        host_row = self._sample_host(now)
        for guest in self.guests:
            self._sample_guest(guest, now)
        self.ledger.write(host_row)

    def _sample_host(self, now: float) -> dict:
        row: dict = {"t": now, "vm": HOST_ROW,
                     "qemu_alive": sum(1 for g in self.guests if g.alive)}
        if self.budget is None:
            sample = host_meminfo_sample(now)
        else:
            reading = self.budget.read()
            usage = reading.usage_mib
            self._read_kernel_log()
            row.update(budget_mib=self.budget.budget_mib, budget_usage_mib=round(usage, 1),
                       budget_peak_mib=_r(reading.peak_mib), budget_file_mib=round(reading.file_mib, 1),
                       budget_swap_mib=_r(reading.swap_mib),
                       host_oom_kills=max(reading.oom_kills, len(self.kernel_kills)),
                       budget_limit_hits=reading.limit_hits, host_swap_used_mib=_r(self.budget.swap_used_mib()))
            sample = HostSample(now, float(self.budget.budget_mib),
                                max(0.0, self.budget.budget_mib - usage + reading.file_mib), reading.swap_mib)
        row["host_free_share"] = round(sample.free_share, 4)
        self.host_history.append(sample)
        return row

    def _sample_guest(self, guest: GuestHandle, now: float) -> None:
        if not guest.alive:
            return  # its QEMU is gone: no more rows (the death is in the events)
        machine = guest.machine
        row: dict = {"t": now, "vm": guest.name, "balloon_target_mib": guest.target_mib}
        mem = machine.process_memory()
        if mem is not None:
            row.update(qemu_rss_mib=round(mem.rss_mib, 1), qemu_anon_mib=round(mem.rss_anon_mib, 1),
                       qemu_file_mib=round(mem.rss_file_mib, 1), qemu_swap_mib=round(mem.swap_mib, 1))
        try:
            actual = machine.balloon.state().actual_mib
            stats = machine.balloon.guest_stats()
            sample = GuestStats(now, actual, stats.free_mib, stats.available_mib, stats.total_mib,
                                stats.swapped_in_mib, stats.swapped_out_mib, stats.major_faults)
            row.update(balloon_actual_mib=round(actual, 1), stats_total_mib=_r(stats.total_mib),
                       stats_free_mib=_r(stats.free_mib), stats_available_mib=_r(stats.available_mib),
                       stats_swapped_out_mib=_r(stats.swapped_out_mib))
            with guest.lock:
                guest.samples.append(sample)
        except HarnessError:
            self._check_death(guest, now)  # QEMU gone, or QMP/libvirt not answering
        except Exception as exc:  # libvirt raises its own errors for a vanished domain
            log.debug("%s: balloon read failed: %s", guest.name, exc)
            self._check_death(guest, now)
        self.ledger.write(row)

    def _read_kernel_log(self) -> None:
        if self.kmsg is None or self.budget is None:
            return
        memcg = "/" + self.budget.cgroup.name
        for kill in self.kmsg.oom_kills(memcg):
            vm = next((g.name for g in self.guests if g.pid == kill.pid), None)
            self.kernel_kills[kill.pid] = vm
            self.record({"event": "host-oom-kill", "pid": kill.pid, "task": kill.task, "vm": vm,
                         "oom_memcg": kill.oom_memcg, "task_memcg": kill.task_memcg})

    def _check_death(self, guest: GuestHandle, now: float) -> None:
        if not guest.alive:
            return
        reason = guest.machine.abort_reason()
        if reason is None:
            return
        guest.died_at = now
        kills = 0
        if self.budget is not None:
            self._read_kernel_log()
            kills = max(self.budget.read().oom_kills, len(self.kernel_kills))
        # The kernel log names the pid; else, one kill per dead QEMU: a kill nobody has
        # been blamed for yet is this one.
        host_oom = guest.pid in self.kernel_kills or kills > self._kills_blamed
        self._kills_blamed += int(host_oom)
        self.record({"event": "vm-died", "vm": guest.name, "reason": reason, "host_oom_kill": host_oom,
                     "host_oom_kills_total": kills})


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
