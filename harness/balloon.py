"""The virtio balloon seen from the host, behind one interface for QMP and libvirt."""

from __future__ import annotations

import abc
from dataclasses import dataclass

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
