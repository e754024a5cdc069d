"""The host memory budget: one memory cgroup that holds every QEMU process of a scenario,
limited to the budget.

Two kernel interfaces, one object:

* cgroup v1 (hybrid hierarchies, these machines): `memory.limit_in_bytes`, and
  `memory.memsw.limit_in_bytes` (memory + swap) where the kernel accounts swap, so that
  `host_swap = "none"` really means that the budget's pages never go to swap;
* cgroup v2 (systemd hosts, CI runners): `memory.max` and `memory.swap.max`.

The group is named `bh-<run id>-<n>` directly under the controller's root, so the reaper
can tell ours (and whose run they were) from every other cgroup; the harness itself never
joins it (QEMU joins it between fork and exec), so the host OOM killer can only pick a QEMU.
"""

from __future__ import annotations

import enum
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError

MIB = 1024 * 1024
PREFIX = "bh-"
#: A budget cgroup's name: the prefix, the run id, a counter.
NAME = re.compile(r"bh-([0-9A-Za-z]+)-(\d+)(?:\.partition)?")


class CgroupVersion(enum.Enum):
    V1 = "v1"
    V2 = "v2"


@dataclass(frozen=True)
class MemoryController:
    """Where the memory controller is mounted and which interface it speaks."""

    version: CgroupVersion
    root: Path


def find_memory_controller(mounts: str | None = None) -> MemoryController | None:
    """The memory controller of this host: cgroup2 if its root offers `memory` (pure v2),
    else the v1 hierarchy mounted with the `memory` option (hybrid), else None."""
    if mounts is None:
        try:
            mounts = Path("/proc/self/mounts").read_text()
        except OSError:
            return None
    v1 = None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        mountpoint, fstype, options = Path(fields[1]), fields[2], fields[3].split(",")
        if fstype == "cgroup2":
            try:
                controllers = (mountpoint / "cgroup.controllers").read_text().split()
            except OSError:
                continue
            if "memory" in controllers:
                return MemoryController(CgroupVersion.V2, mountpoint)
        elif fstype == "cgroup" and "memory" in options and v1 is None:
            v1 = MemoryController(CgroupVersion.V1, mountpoint)
    return v1


@dataclass(frozen=True)
class BudgetReading:
    """One look at the budget cgroup, MiB and counters as the kernel reports them."""

    usage_mib: float
    #: The kernel's own high-water mark (v1 max_usage_in_bytes, v2 memory.peak); None where
    #: the kernel has none (v2 before 5.19: the sampler's maximum stands in).
    peak_mib: float | None
    #: Page cache charged to the group (reclaimable; MOM counts it as free).
    file_mib: float
    #: Swap used by the group's processes (None where the kernel does not account it).
    swap_mib: float | None
    #: Host OOM kills inside the group so far.
    oom_kills: int
    #: How often a charge hit the limit (v1 failcnt, v2 `max` events): demand over budget.
    limit_hits: int
    pids: tuple[int, ...]


class BudgetCgroup:
    """A memory cgroup limited to `limit_mib`, with `swap_mib` of swap allowed on top."""

    def __init__(self, controller: MemoryController, name: str) -> None:
        if not name.startswith(PREFIX) or "/" in name:
            raise ValueError(f"budget cgroup names start with {PREFIX!r}: {name!r}")
        self.controller = controller
        self.name = name
        self.path = controller.root / name

    @property
    def v1(self) -> bool:
        return self.controller.version is CgroupVersion.V1

    @property
    def procs_file(self) -> Path:
        """Writing "0" here moves the writer (used by QEMU between fork and exec)."""
        return self.path / "cgroup.procs"

    # -- setting up ---------------------------------------------------------------------
    def create(self, limit_mib: int, swap_mib: int) -> BudgetCgroup:
        try:
            self.path.mkdir()
        except FileExistsError:
            raise HarnessError(f"The budget cgroup {self.path} exists already.",
                               fix="run `balloon-harness reap` to remove what a killed run left.") from None
        except OSError as exc:
            raise HarnessError(f"Cannot create the memory cgroup {self.path}: {exc.strerror}.",
                               fix="a host memory budget needs root (or a delegated cgroup): run as "
                                   "root, or remove [host] memory_budget_mib from the scenario.") from None
        try:
            self._limit(limit_mib * MIB, swap_mib * MIB)
        except BaseException:
            self.remove()
            raise
        return self

    def _limit(self, limit: int, swap: int) -> None:
        if self.v1:
            # memory first: memsw may never be below it.
            self._write("memory.limit_in_bytes", str(limit))
            if (self.path / "memory.memsw.limit_in_bytes").exists():
                self._write("memory.memsw.limit_in_bytes", str(limit + swap))
            elif swap == 0:
                raise HarnessError("This kernel does not account swap per cgroup (no "
                                   "memory.memsw.limit_in_bytes), so host_swap = \"none\" cannot keep "
                                   "the budget's pages out of swap.",
                                   fix="boot the host with swapaccount=1, or run without host swap "
                                       "(swapoff -a).")
        else:
            self._write("memory.max", str(limit))
            if (self.path / "memory.swap.max").exists():
                self._write("memory.swap.max", str(swap))
            # One QEMU at a time: the OOM killer must not take every guest at once.
            if (self.path / "memory.oom.group").exists():
                self._write("memory.oom.group", "0")

    def _write(self, name: str, value: str) -> None:
        try:
            (self.path / name).write_text(value)
        except OSError as exc:
            raise HarnessError(f"Cannot set {self.path / name} to {value}: {exc.strerror}.",
                               fix="check that the memory controller is writable by this user.") from None

    # -- reading ------------------------------------------------------------------------
    def read(self) -> BudgetReading:
        if self.v1:
            stat = _kv(self._read("memory.stat"))
            usage = int(self._read("memory.usage_in_bytes"))
            memsw = self._read_optional("memory.memsw.usage_in_bytes")
            return BudgetReading(
                usage_mib=usage / MIB,
                peak_mib=int(self._read("memory.max_usage_in_bytes")) / MIB,
                file_mib=stat.get("total_cache", stat.get("cache", 0)) / MIB,
                swap_mib=(int(memsw) - usage) / MIB if memsw is not None else
                (stat["total_swap"] / MIB if "total_swap" in stat else None),
                oom_kills=_kv(self._read("memory.oom_control")).get("oom_kill", 0),
                # A charge over memsw is counted there instead (swap accounting on).
                limit_hits=int(self._read("memory.failcnt")) + int(self._read_optional("memory.memsw.failcnt") or 0),
                pids=self.pids())
        stat = _kv(self._read("memory.stat"))
        events = _kv(self._read("memory.events"))
        peak = self._read_optional("memory.peak")
        swap = self._read_optional("memory.swap.current")
        return BudgetReading(
            usage_mib=int(self._read("memory.current")) / MIB,
            peak_mib=int(peak) / MIB if peak is not None else None,
            file_mib=stat.get("file", 0) / MIB,
            swap_mib=int(swap) / MIB if swap is not None else None,
            oom_kills=events.get("oom_kill", 0),
            limit_hits=events.get("max", 0),
            pids=self.pids())

    def pids(self) -> tuple[int, ...]:
        text = self._read_optional("cgroup.procs") or ""
        return tuple(int(p) for p in text.split())

    def exists(self) -> bool:
        return self.path.is_dir()

    def _read(self, name: str) -> str:
        return (self.path / name).read_text()

    def _read_optional(self, name: str) -> str | None:
        try:
            return self._read(name)
        except OSError:
            return None

    # -- tearing down -------------------------------------------------------------------
    def remove(self, timeout: float = 10.0) -> bool:
        """rmdir the group (and any children, e.g. libvirt's per-domain groups) once its
        processes are gone; True when it is gone. Never kills: the machines stop first."""
        return remove_tree(self.path, timeout)


def remove_tree(path: Path, timeout: float = 10.0) -> bool:
    """Remove a cgroup directory bottom-up with rmdir only (cgroupfs has no files to
    delete). A group whose last process is still exiting refuses with EBUSY for a moment."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            for dirpath, dirnames, _files in os.walk(path, topdown=False):
                for d in dirnames:
                    os.rmdir(os.path.join(dirpath, d))
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return not path.exists()
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)  # exiting tasks leave the group within milliseconds


def _kv(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def budget_groups(controller: MemoryController) -> list[tuple[Path, str]]:
    """(path, run id) of every budget cgroup of this harness under the controller's root."""
    found = []
    try:
        entries = sorted(controller.root.iterdir())
    except OSError:
        return []
    for entry in entries:
        match = NAME.fullmatch(entry.name)
        if match and entry.is_dir() and not entry.is_symlink():
            found.append((entry, match[1]))
    return found
