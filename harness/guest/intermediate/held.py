"""`held`: what is held on this machine -- processes in state T (stopped) and the tasks of frozen
cgroups (`frozen 1` in cgroup.events; they show state S or D, so a look at state T misses them).
Whoever stopped or froze them; the scenario runner's "left stopped" check uses it."""

from __future__ import annotations

import json
import os
from typing import Any

from .freezer import read_frozen
from .observe import read_cgroup_procs
from .procs import cgroup2_mount, list_pids, read_stat


def stopped_processes() -> list[dict[str, Any]]:
    found = []
    for pid in list_pids():
        stat = read_stat(pid)
        if stat is not None and stat.state == "T" and not stat.is_kernel_thread:
            found.append({"pid": pid, "comm": stat.comm, "state": stat.state})
    return sorted(found, key=lambda p: p["pid"])


def frozen_tasks(mount: str | None = None) -> list[dict[str, Any]]:
    mount = cgroup2_mount() if mount is None else mount
    if mount is None:
        return []
    found = []
    for directory, _dirs, files in os.walk(mount):
        if "cgroup.events" not in files or not read_frozen(directory):
            continue
        cgroup = directory[len(mount.rstrip("/")):] or "/"
        for pid in read_cgroup_procs(directory) or ():
            stat = read_stat(pid)
            if stat is not None and not stat.is_zombie:
                found.append({"pid": pid, "comm": stat.comm, "cgroup": cgroup})
    return sorted(found, key=lambda p: p["pid"])


def held() -> dict[str, list[dict[str, Any]]]:
    return {"stopped": stopped_processes(), "frozen": frozen_tasks()}


def held_labels(text: str) -> list[str]:
    """`comm(pid)` for each held process, from the JSON `held` printed."""
    data = json.loads(text)
    labels = [f"{p['comm']}({p['pid']})" for p in data.get("stopped", [])]
    labels += [f"{p['comm']}({p['pid']}):frozen:{p['cgroup']}" for p in data.get("frozen", [])]
    return labels
