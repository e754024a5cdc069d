"""A scenario's host memory budget, set up and torn down as one: the budget cgroup (every
QEMU of the scenario inside it) and the optional host swap file."""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from harness.errors import ConfigError, HarnessError
from harness.host.cgroup import PREFIX, BudgetCgroup, BudgetReading, MemoryController, find_memory_controller
from harness.host.libvirt_partition import SUFFIX, create_partition, remove_partition
from harness.host.swap import FILE_PREFIX, HostSwapFile
from harness.runtime import Run

log = logging.getLogger(__name__)

_counter = itertools.count(1)


@dataclass(frozen=True)
class HostSwapSpec:
    """`none`, or `file:MIB`: a swap file of that size on the host for the run."""

    size_mib: int = 0

    @classmethod
    def parse(cls, text: str) -> HostSwapSpec:
        text = text.strip().lower()
        if text == "none":
            return cls(0)
        match = re.fullmatch(r"file:(\d+)", text)
        if not match or int(match[1]) < 1:
            raise ConfigError(f"Invalid host swap {text!r}.", fix='write "none" or "file:MIB".')
        return cls(int(match[1]))

    def __str__(self) -> str:
        return f"file:{self.size_mib}" if self.size_mib else "none"


class HostBudget:
    """`with HostBudget(run, 1536, HostSwapSpec(0)) as budget:` — machines started with
    `budget.cgroup` as their placement run inside it; everything is removed on exit."""

    def __init__(self, run: Run, budget_mib: int, swap: HostSwapSpec,
                 controller: MemoryController | None = None, *, libvirt: bool = False) -> None:
        self.run = run
        self.budget_mib = budget_mib
        self.swap_spec = swap
        self.controller = controller or find_memory_controller()
        if self.controller is None:
            raise HarnessError("This host has no memory cgroup controller, so a scenario's host "
                               "memory budget cannot be enforced.",
                               fix="mount the memory controller (cgroup v1 or v2), or remove [host] "
                                   "memory_budget_mib from the scenario.")
        n = next(_counter)
        name = f"{PREFIX}{run.run_id}-{n}"
        #: libvirt's resource partition for this budget (None: QEMU is started directly).
        self.libvirt_partition = f"/{name}" if libvirt else None
        self.cgroup = BudgetCgroup(self.controller, name + (SUFFIX if libvirt else ""))
        self._partition_dirs: list[Path] = []
        self.swap = HostSwapFile(run.path / f"{FILE_PREFIX}{n}.img", swap.size_mib) if swap.size_mib else None

    def __enter__(self) -> HostBudget:
        if self.swap is not None:
            self.swap.create()
        try:
            self.cgroup.create(self.budget_mib, self.swap_spec.size_mib)
            if self.libvirt_partition:
                self._partition_dirs = create_partition(self.cgroup.name, self.controller.root)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        for path in remove_partition(self._partition_dirs):
            log.warning("libvirt partition folder %s is still in use; `balloon-harness reap` removes it later", path)
        if self.cgroup.exists() and not self.cgroup.remove():
            log.warning("budget cgroup %s still has processes %s; `balloon-harness reap` removes it later",
                        self.cgroup.path, self.cgroup.pids())
        if self.swap is not None and self.swap.path.exists():
            try:
                self.swap.remove()
            except HarnessError as exc:
                log.warning("%s", exc)

    def read(self) -> BudgetReading:
        return self.cgroup.read()

    def swap_used_mib(self) -> float | None:
        return self.swap.used_mib() if self.swap is not None else None

    @property
    def path(self) -> Path:
        return self.cgroup.path
