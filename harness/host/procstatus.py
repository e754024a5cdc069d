"""What the host kernel says about one process's memory (/proc/PID/status)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessMemory:
    rss_mib: float
    #: Pages of the process the host has swapped out: guest RAM paged out behind the guest.
    swap_mib: float


def process_memory(pid: int | None) -> ProcessMemory | None:
    if not pid:
        return None
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmSwap"):
            values[key] = int(rest.split()[0]) / 1024
    if "VmRSS" not in values:
        return None  # a zombie has no memory lines
    return ProcessMemory(values["VmRSS"], values.get("VmSwap", 0.0))
