"""Host swap for a scenario (`[host] host_swap = "file:MIB"`): a swap file made and enabled
as root for the run, disabled and deleted afterwards, and by the reaper after a killed run.

The file lives in the run's own folder and is named `bh-swap-<n>.img`, so a leftover is
recognised from /proc/swaps by its path alone (whose run, and whether that run is dead).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError, MissingDependency
from harness.hosttools import find_tool

PROC_SWAPS = Path("/proc/swaps")
FILE_PREFIX = "bh-swap-"


def _tool(name: str) -> str:
    path = find_tool(name)
    if path is None:
        raise MissingDependency(f"The program {name!r} is not installed.",
                                fix="sudo apt-get install -y util-linux")
    return path


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise HarnessError(f"{what} failed: {(proc.stderr or proc.stdout).strip()}",
                           fix="host swap needs root; run as root or use host_swap = \"none\".")


@dataclass(frozen=True)
class SwapEntry:
    path: Path
    size_kib: int
    used_kib: int


def active_swaps(text: str | None = None) -> list[SwapEntry]:
    """The swap areas the kernel uses now (/proc/swaps; paths with spaces come escaped
    as \\040, which ours never contain)."""
    if text is None:
        try:
            text = PROC_SWAPS.read_text()
        except OSError:
            return []
    entries = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 4 and fields[2].isdigit() and fields[3].isdigit():
            entries.append(SwapEntry(Path(fields[0]), int(fields[2]), int(fields[3])))
    return entries


class HostSwapFile:
    def __init__(self, path: Path, size_mib: int) -> None:
        if not path.name.startswith(FILE_PREFIX):
            raise ValueError(f"host swap files are named {FILE_PREFIX}*: {path}")
        self.path = path
        self.size_mib = size_mib
        self.enabled = False

    def create(self) -> HostSwapFile:
        """Allocate the file for real (swap cannot use holes), format it, enable it."""
        mkswap, swapon = _tool("mkswap"), _tool("swapon")
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            try:
                os.posix_fallocate(fd, 0, self.size_mib << 20)
            except OSError:
                block = b"\0" * (1 << 20)  # file systems without fallocate: write it out
                for _ in range(self.size_mib):
                    os.write(fd, block)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            _run([mkswap, "-q", str(self.path)], f"mkswap {self.path}")
            _run([swapon, str(self.path)], f"swapon {self.path}")
        except BaseException:
            self.path.unlink(missing_ok=True)
            raise
        self.enabled = True
        return self

    def used_mib(self) -> float | None:
        for entry in active_swaps():
            if entry.path == self.path:
                return entry.used_kib / 1024
        return None

    def remove(self) -> None:
        """swapoff (what is still swapped out comes back in, or is dropped when its owner
        is gone) and delete the file."""
        remove_swap_file(self.path)
        self.enabled = False


def remove_swap_file(path: Path) -> None:
    if any(entry.path == path for entry in active_swaps()):
        _run([_tool("swapoff"), str(path)], f"swapoff {path}")
    path.unlink(missing_ok=True)


def swaps_under(folder: Path) -> list[Path]:
    """Active harness swap files inside `folder` (a run's folder)."""
    return [e.path for e in active_swaps()
            if e.path.name.startswith(FILE_PREFIX) and folder in e.path.parents]
