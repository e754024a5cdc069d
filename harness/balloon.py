"""The virtio balloon seen from the host, behind one interface for QMP and libvirt."""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from dataclasses import dataclass

from harness.errors import ConfigError
from harness.waiting import Deadline

MIB = 1024 * 1024


@dataclass(frozen=True)
class BalloonState:
    #: The guest's logical memory size right now (what the balloon leaves it), MiB.
    actual_mib: float
    #: The last target the host asked for, MiB (None if never set in this session).
    target_mib: float | None


@dataclass(frozen=True)
class GuestMemoryStats:
    """virtio-balloon guest statistics, MiB (None where the guest does not report a field)."""

    total_mib: float | None
    free_mib: float | None
    available_mib: float | None
    swapped_in_mib: float | None
    swapped_out_mib: float | None
    major_faults: int | None
    minor_faults: int | None
    last_update: int | None


class Balloon(abc.ABC):
    """Host-side control of one VM's balloon."""

    #: The VM's maximum memory (what it booted with), MiB.
    max_mib: int

    @abc.abstractmethod
    def set_target(self, mib: float) -> None:
        """Ask the guest to shrink or grow to `mib` (returns before the guest acts)."""

    @abc.abstractmethod
    def state(self) -> BalloonState: ...

    @abc.abstractmethod
    def set_stats_interval(self, seconds: int) -> None: ...

    @abc.abstractmethod
    def guest_stats(self) -> GuestMemoryStats: ...


@dataclass(frozen=True)
class BalloonWait:
    """How a wait for the balloon ended."""

    target_mib: float
    reached: bool
    actual_mib: float
    seconds: float

    def describe(self) -> str:
        verb = "reached" if self.reached else "did not reach"
        return (f"balloon {verb} {self.target_mib:.0f} MiB after {self.seconds:.1f} s "
                f"(actual {self.actual_mib:.0f} MiB)")


#: Below this the Debian guest cannot keep sshd and systemd alive.
DEFAULT_FLOOR_MIB = 192


class BalloonController:
    """Validated targets, waits on `actual` (never on host RSS), and ramps."""

    def __init__(self, balloon: Balloon, floor_mib: float = DEFAULT_FLOOR_MIB) -> None:
        self.balloon = balloon
        self.floor_mib = floor_mib

    def set_target(self, mib: float) -> None:
        if mib > self.balloon.max_mib:
            raise ConfigError(f"Balloon target {mib:.0f} MiB is above the VM's memory "
                              f"({self.balloon.max_mib} MiB): the balloon can only give back "
                              f"what it took.", fix=f"use a target of at most {self.balloon.max_mib} MiB.")
        if mib < self.floor_mib:
            raise ConfigError(f"Balloon target {mib:.0f} MiB is below the floor of "
                              f"{self.floor_mib:.0f} MiB, where the guest cannot keep running.",
                              fix=f"use at least {self.floor_mib:.0f} MiB (or lower the floor explicitly).")
        self.balloon.set_target(mib)

    def wait_until(self, target_mib: float, timeout: float, tolerance_mib: float = 16.0,
                   interval: float = 0.2) -> BalloonWait:
        """Poll `actual` until it is within `tolerance_mib` of the target or the deadline
        passes; never raises on a miss, it reports how far the balloon got."""
        deadline = Deadline(timeout)
        while True:
            actual = self.balloon.state().actual_mib
            elapsed = deadline.elapsed()
            if abs(actual - target_mib) <= tolerance_mib:
                return BalloonWait(target_mib, True, actual, elapsed)
            if elapsed >= timeout:
                return BalloonWait(target_mib, False, actual, elapsed)
            time.sleep(interval)  # polling period of the readiness signal above

    def resize(self, target_mib: float, timeout: float, tolerance_mib: float = 16.0) -> BalloonWait:
        self.set_target(target_mib)
        return self.wait_until(target_mib, timeout, tolerance_mib)

    def ramp(self, from_mib: float, to_mib: float, over_s: float, steps: int | None = None,
             should_stop: Callable[[], bool] = lambda: False) -> None:
        """Move the target from `from_mib` to `to_mib` in equal steps spread over `over_s`."""
        steps = steps or max(1, int(over_s))  # about one step a second
        started = time.monotonic()
        for i in range(1, steps + 1):
            if should_stop():
                return
            self.set_target(from_mib + (to_mib - from_mib) * i / steps)
            next_at = started + over_s * i / steps
            delay = next_at - time.monotonic()
            if delay > 0 and i < steps:
                time.sleep(delay)  # the ramp's own schedule
