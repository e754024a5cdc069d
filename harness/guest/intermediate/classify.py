"""Interposition: sort the processes in scope into protected, never-stop and distinct.

Protected ("the objects in the balloon") = the core (--protect-*) and its descendants, processes
similar to a core process (same executable AND same cgroup), the ancestors of core processes
(except PID 1), and, transitively, processes dependent on a protected one (a shared pipe, a shared
socket, or the two ends of a unix-socket connection) -- but dependency never propagates through a
never-stop process: everything talks to journald, which must not make everything protected.
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass

from .config import CONTROL_ENV_MARKER, Selection
from .procs import (
    INIT_PID,
    FdInodes,
    ProcessInfo,
    ProcessTable,
    cgroup_within,
    read_cgroup,
    read_fd_inodes,
    read_process_info,
)
from .unixdiag import UnixPeers

log = logging.getLogger(__name__)

COMM_MAX = 15  # the kernel truncates comm to 15 characters

# Stable reason strings (documented in README.md).
CORE = "protected:core"
SIMILAR = "protected:similar"
ANCESTOR = "protected:ancestor"
DEPENDENT = "protected:dependent"
DISTINCT_REASON = "distinct"

# comm -> reason for the system processes that are never stopped.
BUILTIN_NEVER_STOP = {
    "sshd": "never-stop:sshd",
    "systemd": "never-stop:systemd",
    "(sd-pam)": "never-stop:systemd",
    "dbus-daemon": "never-stop:dbus-daemon",
    "dbus-broker": "never-stop:dbus-daemon",
    "agetty": "never-stop:agetty",
}


class Category(enum.Enum):
    PROTECTED = "protected"
    NEVER_STOP = "never-stop"
    DISTINCT = "distinct"


@dataclass(frozen=True)
class Verdict:
    category: Category
    reason: str


def name_matches(info: ProcessInfo, names: Iterable[str]) -> bool:
    """comm (compared truncated to 15 chars) or the basename of argv[0]/argv[1]."""
    candidates = info.names()
    for name in names:
        if info.comm == name[:COMM_MAX] or name in candidates:
            return True
    return False


def builtin_never_stop(comm: str) -> str | None:
    if comm in BUILTIN_NEVER_STOP:
        return BUILTIN_NEVER_STOP[comm]
    if comm.startswith("systemd-"):  # systemd-journal(d), systemd-logind, systemd-udevd, ...
        return "never-stop:systemd"
    return None


@dataclass
class Classification:
    table: ProcessTable
    infos: dict[int, ProcessInfo]  # user processes in scope
    verdicts: dict[int, Verdict]  # every process in scope (kernel threads included)

    def pids(self, category: Category) -> list[int]:
        return sorted(pid for pid, v in self.verdicts.items() if v.category is category)

    def verdict(self, pid: int) -> Verdict | None:
        return self.verdicts.get(pid)


class Classifier:
    def __init__(
        self,
        selection: Selection,
        self_pids: Iterable[int] = (),
        control_env: str = CONTROL_ENV_MARKER,
    ) -> None:
        self.selection = selection
        self.self_pids = set(self_pids)
        self.control_env = control_env
        self._scope_gone_logged = False

    # -- scope -------------------------------------------------------------------------------
    def _scope_candidates(self, table: ProcessTable) -> set[int]:
        sel = self.selection
        pids = {pid for pid, stat in table.stats.items() if not stat.is_zombie}
        if sel.scope_pid is not None:
            root = table.stats.get(sel.scope_pid)
            if root is None or (sel.scope_starttime is not None and root.starttime != sel.scope_starttime):
                # The scope process is gone (its pid may be someone else's now): nothing is in scope.
                if not self._scope_gone_logged:
                    log.warning("--scope-pid %d is gone: nothing is in scope any more", sel.scope_pid)
                    self._scope_gone_logged = True
                return set()
            pids &= table.descendants(sel.scope_pid)
        return pids

    def _never_stop_reason(self, info: ProcessInfo, daemon_ancestors: set[int]) -> str | None:
        sel = self.selection
        pid = info.pid
        if pid in self.self_pids:
            return "never-stop:self"
        if pid in daemon_ancestors:
            # Stopping the shell or service manager that runs us is never useful.
            return "never-stop:daemon-ancestor"
        builtin = builtin_never_stop(info.comm)
        if builtin:
            return builtin
        if info.oom_score_adj == -1000:
            return "never-stop:oom-score-adj"
        if sel.never_stop_comms and name_matches(info, sel.never_stop_comms):
            return "never-stop:comm"
        if any(cgroup_within(info.cgroup, root) for root in sel.never_stop_cgroups):
            return "never-stop:cgroup"
        if info.has_control_env:
            return "never-stop:control-env"
        return None

    # -- the whole classification --------------------------------------------------------------
    def classify(self, table: ProcessTable | None = None, peers: UnixPeers | None = None) -> Classification:
        table = ProcessTable.scan() if table is None else table
        sel = self.selection
        verdicts: dict[int, Verdict] = {}
        infos: dict[int, ProcessInfo] = {}

        for pid in self._scope_candidates(table):
            stat = table.stats[pid]
            cgroup = None
            if sel.scope_cgroup is not None:
                cgroup = read_cgroup(pid)
                if not cgroup_within(cgroup, sel.scope_cgroup):
                    continue
            if pid == INIT_PID:
                verdicts[pid] = Verdict(Category.NEVER_STOP, "never-stop:pid1")
                continue
            if stat.is_kernel_thread:
                verdicts[pid] = Verdict(Category.NEVER_STOP, "never-stop:kthread")
                continue
            infos[pid] = read_process_info(stat, self.control_env, cgroup)

        daemon_ancestors = set(table.ancestors(os.getpid()))
        candidates: set[int] = set()  # may be protected or distinct
        for pid, info in infos.items():
            reason = self._never_stop_reason(info, daemon_ancestors)
            if reason is not None:
                verdicts[pid] = Verdict(Category.NEVER_STOP, reason)
            else:
                candidates.add(pid)

        protected: dict[int, str] = {}

        # Core: matched processes and all their descendants.
        matched: set[int] = set()
        for pid, info in infos.items():
            if (
                pid in sel.protect_pids
                or (sel.protect_comms and name_matches(info, sel.protect_comms))
                or any(cgroup_within(info.cgroup, root) for root in sel.protect_cgroups)
            ):
                matched.add(pid)
        core: set[int] = set(matched)
        for pid in list(matched) + [p for p in sel.protect_pids if p in table.stats]:
            core |= table.descendants(pid) & set(infos)
        for pid in core & candidates:
            protected[pid] = CORE

        # Similar: same executable and same cgroup as a core process.
        core_keys = {(infos[p].exe, infos[p].cgroup) for p in core if p in infos and infos[p].exe}
        for pid in candidates - protected.keys():
            info = infos[pid]
            if core_keys and info.exe and (info.exe, info.cgroup) in core_keys:
                protected[pid] = SIMILAR

        # Ancestors of core processes, PID 1 excluded.
        for pid in core:
            for ancestor in table.ancestors(pid):
                if ancestor == INIT_PID:
                    break
                if ancestor in candidates and ancestor not in protected:
                    protected[ancestor] = ANCESTOR

        # Dependents: transitively over pipes and unix sockets, among candidates only.
        fds = {pid: read_fd_inodes(pid) for pid in candidates}
        if any(f.sockets for f in fds.values()) and protected:
            peers = UnixPeers.read() if peers is None else peers
        self._add_dependents(protected, candidates, fds, peers)

        for pid in candidates:
            if pid in protected:
                verdicts[pid] = Verdict(Category.PROTECTED, protected[pid])
            else:
                verdicts[pid] = Verdict(Category.DISTINCT, DISTINCT_REASON)
        return Classification(table=table, infos=infos, verdicts=verdicts)

    @staticmethod
    def _add_dependents(
        protected: dict[int, str],
        candidates: set[int],
        fds: dict[int, FdInodes],
        peers: UnixPeers | None,
    ) -> None:
        pipe_owners: dict[int, set[int]] = {}
        socket_owners: dict[int, set[int]] = {}
        for pid, held in fds.items():
            for inode in held.pipes:
                pipe_owners.setdefault(inode, set()).add(pid)
            for inode in held.sockets:
                socket_owners.setdefault(inode, set()).add(pid)

        def neighbours(pid: int) -> set[int]:
            held = fds.get(pid, FdInodes())
            found: set[int] = set()
            for inode in held.pipes:
                found |= pipe_owners.get(inode, set())
            for inode in held.sockets:
                found |= socket_owners.get(inode, set())  # the same socket, shared
                if peers is not None:
                    for other in peers.linked(inode):  # the other end of a connection
                        found |= socket_owners.get(other, set())
            found.discard(pid)
            return found

        # Only candidates are in fds, so never-stop processes are never traversed.
        queue = [pid for pid in protected if pid in candidates]
        while queue:
            pid = queue.pop()
            for other in neighbours(pid):
                if other in candidates and other not in protected:
                    protected[other] = DEPENDENT
                    queue.append(other)
