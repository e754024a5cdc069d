"""The libvirt backend's way into a scenario's host budget: a resource partition.

Where libvirt manages cgroups itself (no systemd-machined, as on these hybrid hosts), a
domain with `<resource><partition>/bh-X</partition>` is placed in `bh-X.partition/` of every
cgroup v1 hierarchy, which must exist beforehand (libvirt creates only its default
`/machine`). The budget cgroup of the memory hierarchy is named `bh-<run>-<n>.partition` so
that it is that partition; this module makes its companions in the other hierarchies (with
cpuset's cpus and mems copied from the root, or nothing could join it) and removes them.
With systemd-machined a partition is a systemd slice instead, which this does not set up:
such hosts get a clear error naming the qemu backend.
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import ConfigError, HarnessError
from harness.host.cgroup import remove_tree
from harness.host.reap import CGROUP_ROOT, cgroup_hierarchies

SUFFIX = ".partition"


def machined_in_use() -> bool:
    """systemd runs the host (sd_booted's test), so libvirt registers domains with machined."""
    return Path("/run/systemd/system").is_dir()


def partition_dirs(group_name: str, memory_root: Path, root: Path = CGROUP_ROOT) -> list[Path]:
    """The companion folders of `group_name` (already ending in .partition) in the hierarchies
    other than memory's; a cgroup2 hierarchy without controllers is skipped (libvirt's v2
    backend does not use it; here it has hugetlb, so libvirt does)."""
    dirs = []
    for hierarchy in cgroup_hierarchies(root):
        if hierarchy == memory_root or hierarchy == root:
            continue
        controllers = hierarchy / "cgroup.controllers"
        if controllers.exists() and not controllers.read_text().split():
            continue  # cgroup2 without controllers: libvirt's v2 backend is off here
        dirs.append(hierarchy / group_name)
    return dirs


def create_partition(group_name: str, memory_root: Path, root: Path = CGROUP_ROOT) -> list[Path]:
    if machined_in_use():
        raise ConfigError("With systemd-machined, libvirt puts domains in systemd slices, and this "
                          "harness does not set a host memory budget up as a slice.",
                          fix="run scenarios with a [host] memory_budget_mib on the qemu backend "
                              "(--backend qemu), or drop the budget for libvirt runs.")
    made: list[Path] = []
    try:
        for path in partition_dirs(group_name, memory_root, root):
            path.mkdir()
            made.append(path)
            if (path / "cpuset.cpus").exists():
                for name in ("cpuset.cpus", "cpuset.mems"):
                    (path / name).write_text((path.parent / name).read_text())
    except OSError as exc:
        remove_partition(made)
        raise HarnessError(f"Cannot create the libvirt partition folder {exc.filename}: {exc.strerror}.",
                           fix="run as root on a host whose cgroup v1 hierarchies are writable.") from None
    return made


def remove_partition(dirs: list[Path]) -> list[Path]:
    """The folders that could not be removed (libvirt still has a domain there)."""
    return [path for path in dirs if not remove_tree(path)]
