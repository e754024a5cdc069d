"""What a balloon policy sees and says.

A policy is a small class with one pure method, `decide(state) -> [BalloonAction]`: no
clock, no QMP, no SSH inside. The runner samples the host (the budget cgroup) and every
guest's balloon (QMP `guest-stats` or libvirt `memoryStats`) every 0.5 s, calls `decide`
every `interval_s` with the history, and applies the targets it returns. The same call works
on stats recorded in a run's ledger, which is how policies are unit-tested without a VM.
Inputs come only from the host side, never from SSH: a guest under pressure stops answering
SSH exactly when a policy needs to know about it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass


@dataclass(frozen=True)
class GuestStats:
    """One sample of one guest through its balloon device (MiB; None where the guest does
    not report the figure)."""

    t: float
    #: The balloon's `actual`: the guest's current logical size (MOM's balloon_cur).
    actual_mib: float
    #: MemFree (virtio stat-free-memory, libvirt `unused`; MOM's mem_unused).
    free_mib: float | None = None
    #: MemAvailable (stat-available-memory, libvirt `usable`).
    available_mib: float | None = None
    #: MemTotal (stat-total-memory, libvirt `available`).
    total_mib: float | None = None
    swapped_in_mib: float | None = None
    swapped_out_mib: float | None = None
    major_faults: int | None = None


@dataclass(frozen=True)
class GuestView:
    name: str
    #: The VM's size (MOM's balloon_max).
    max_mib: float
    #: The lowest target the policy may set (MOM's balloon_min).
    min_mib: float
    #: The target last set (None: never, the guest is at its boot size).
    target_mib: float | None
    #: Oldest first; may be empty at the very start.
    samples: tuple[GuestStats, ...] = ()
    #: False once its QEMU is gone (killed by the host OOM killer, for example).
    alive: bool = True

    @property
    def latest(self) -> GuestStats | None:
        return self.samples[-1] if self.samples else None


@dataclass(frozen=True)
class HostSample:
    """The host as a policy sees it: the budget cgroup when there is one, else the machine."""

    t: float
    #: The budget (or the host's MemTotal), MiB (MOM's Host.mem_available).
    total_mib: float
    #: What is not used, counting page cache as free: budget - usage + cache (MOM's mem_free).
    free_mib: float
    swap_used_mib: float | None = None

    @property
    def free_share(self) -> float:
        return self.free_mib / self.total_mib if self.total_mib > 0 else 0.0


@dataclass(frozen=True)
class PolicyInput:
    #: Seconds since the run started.
    t_s: float
    #: Oldest first.
    host: tuple[HostSample, ...]
    guests: tuple[GuestView, ...]


@dataclass(frozen=True)
class BalloonAction:
    vm: str
    target_mib: float
    #: One line for the event log: why this target.
    reason: str


class Policy(abc.ABC):
    #: Seconds between two calls of decide().
    interval_s: float = 1.0

    @abc.abstractmethod
    def decide(self, state: PolicyInput) -> list[BalloonAction]:
        """New targets for the guests that should change (none: leave them)."""


def mean(values: list[float]) -> float:
    return sum(values) / len(values)
