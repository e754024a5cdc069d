"""Removing the host budget cgroups and swap files of runs whose owner is dead (called by
`balloon-harness reap`). Only `bh-<run id>-<n>` cgroups of dead run ids are touched, in
every hierarchy where the harness or libvirt made them, and only `bh-swap-*` files inside a
dead run's own folder are swapped off."""

from __future__ import annotations

import logging
from pathlib import Path

from harness.errors import HarnessError
from harness.host.cgroup import NAME, remove_tree
from harness.host.swap import remove_swap_file, swaps_under

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_hierarchies(root: Path = CGROUP_ROOT) -> list[Path]:
    """The roots of every mounted hierarchy: /sys/fs/cgroup itself on pure v2, each
    controller's folder (and `unified`) on hybrid hosts."""
    if (root / "cgroup.controllers").exists():
        return [root]
    try:
        return [p for p in sorted(root.iterdir()) if p.is_dir() and not p.is_symlink()
                and ((p / "cgroup.procs").exists())]
    except OSError:
        return []


def leftover_cgroups(dead_run_ids: set[str], root: Path = CGROUP_ROOT) -> list[Path]:
    found = []
    for hierarchy in cgroup_hierarchies(root):
        try:
            entries = sorted(hierarchy.iterdir())
        except OSError:
            continue
        for entry in entries:
            match = NAME.fullmatch(entry.name)
            if match and match[1] in dead_run_ids and entry.is_dir() and not entry.is_symlink():
                found.append(entry)
    return found


def reap_host(dead_runs: dict[str, Path], root: Path = CGROUP_ROOT) -> list[str]:
    """Swap files first (their pages belong to processes already killed), then cgroups.
    Returns what was removed."""
    removed = []
    for run_path in dead_runs.values():
        for path in swaps_under(run_path):
            try:
                remove_swap_file(path)
                removed.append(f"swap file {path}")
            except HarnessError as exc:
                log.warning("cannot remove the host swap file %s: %s", path, exc)
    for path in leftover_cgroups(set(dead_runs), root):
        if remove_tree(path):
            removed.append(f"cgroup {path}")
        else:
            log.warning("cannot remove cgroup %s: processes are still in it", path)
    return removed
