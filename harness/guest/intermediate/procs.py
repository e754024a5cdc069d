"""Reading /proc: one small function per fact, all tolerant of processes that vanish mid-read."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

PF_KTHREAD = 0x00200000
KTHREADD_PID = 2
INIT_PID = 1


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/PID/stat the daemon uses."""

    pid: int
    comm: str
    state: str
    ppid: int
    pgid: int
    sid: int
    flags: int
    starttime: int  # field 22: clock ticks after boot; with the pid it identifies a process

    @property
    def is_kernel_thread(self) -> bool:
        return bool(self.flags & PF_KTHREAD) or self.pid == KTHREADD_PID or self.ppid == KTHREADD_PID

    @property
    def is_zombie(self) -> bool:
        return self.state in ("Z", "X", "x")


def parse_stat(text: str) -> ProcStat:
    # comm may contain spaces and parentheses: it ends at the LAST ')'.
    open_paren = text.index("(")
    close_paren = text.rindex(")")
    pid = int(text[:open_paren])
    comm = text[open_paren + 1 : close_paren]
    rest = text[close_paren + 2 :].split()
    # rest[0] is field 3 (state); field N is rest[N - 3].
    return ProcStat(
        pid=pid,
        comm=comm,
        state=rest[0],
        ppid=int(rest[1]),
        pgid=int(rest[2]),
        sid=int(rest[3]),
        flags=int(rest[6]),
        starttime=int(rest[19]),
    )


def _read_bytes(path: str) -> bytes | None:
    """The whole file, with plain open/read/close: a scan reads hundreds of these, and Python's
    buffered file objects cost several times the syscalls' own time (under TCG, tens of ms a scan)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # gone, or not ours to read
        return None
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_text(path: str) -> str | None:
    raw = _read_bytes(path)
    return None if raw is None else raw.decode("utf-8", "replace")


def list_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def read_stat(pid: int) -> ProcStat | None:
    text = _read_text(f"/proc/{pid}/stat")
    if not text:
        return None
    try:
        return parse_stat(text)
    except (ValueError, IndexError):
        return None


def is_same_process(pid: int, starttime: int) -> bool:
    """True if `pid` is alive (not a zombie) and still the process that had `starttime`."""
    stat = read_stat(pid)
    return stat is not None and stat.starttime == starttime and not stat.is_zombie


def read_state(pid: int) -> str | None:
    stat = read_stat(pid)
    return None if stat is None else stat.state


def read_exe(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def read_cmdline(pid: int) -> list[str]:
    raw = _read_bytes(f"/proc/{pid}/cmdline")
    if not raw:
        return []
    return [part.decode("utf-8", "replace") for part in raw.rstrip(b"\0").split(b"\0")]


def read_cgroup(pid: int) -> str | None:
    """The cgroup v2 path (the `0::` line), e.g. `/system.slice/foo.service`."""
    text = _read_text(f"/proc/{pid}/cgroup")
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    return None


def read_oom_score_adj(pid: int) -> int | None:
    text = _read_text(f"/proc/{pid}/oom_score_adj")
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def environ_contains(pid: int, entry: str) -> bool:
    raw = _read_bytes(f"/proc/{pid}/environ")
    if not raw:
        return False
    return entry.encode() in raw.split(b"\0")


@dataclass(frozen=True)
class MemoryUsage:
    rss_kb: int = 0
    swap_kb: int = 0


def read_memory(pid: int) -> MemoryUsage:
    text = _read_text(f"/proc/{pid}/status")
    if text is None:
        return MemoryUsage()
    rss = swap = 0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmSwap:"):
            swap = int(line.split()[1])
    return MemoryUsage(rss_kb=rss, swap_kb=swap)


@dataclass(frozen=True)
class FdInodes:
    pipes: frozenset[int] = frozenset()
    sockets: frozenset[int] = frozenset()


def read_fd_inodes(pid: int) -> FdInodes:
    """Inodes of the pipes and sockets a process holds open (from /proc/PID/fd links)."""
    base = f"/proc/{pid}/fd"
    try:
        names = os.listdir(base)
    except OSError:
        return FdInodes()
    pipes: set[int] = set()
    sockets: set[int] = set()
    for name in names:
        try:
            target = os.readlink(f"{base}/{name}")
        except OSError:
            continue
        if target.startswith("pipe:["):
            pipes.add(int(target[6:-1]))
        elif target.startswith("socket:["):
            sockets.add(int(target[8:-1]))
    return FdInodes(pipes=frozenset(pipes), sockets=frozenset(sockets))


def read_mem_available_kb(path: str = "/proc/meminfo") -> int:
    text = _read_text(path) or ""
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


# -- cgroup v2 paths ---------------------------------------------------------------------------


def cgroup2_mount() -> str | None:
    """Where the cgroup2 hierarchy is mounted: /sys/fs/cgroup (pure v2) or .../unified (hybrid)."""
    text = _read_text("/proc/self/mountinfo") or ""
    for line in text.splitlines():
        pre, sep, post = line.partition(" - ")
        if sep and post.split()[0] == "cgroup2":
            return pre.split()[4]
    return None


def normalize_cgroup(path: str, mount: str | None = None) -> str:
    """Accept a hierarchy path (`/system.slice/x`) or a filesystem path under the cgroup2 mount."""
    mount = cgroup2_mount() if mount is None else mount
    path = path.rstrip("/") or "/"
    if mount and (path == mount or path.startswith(mount.rstrip("/") + "/")):
        path = path[len(mount.rstrip("/")) :] or "/"
    if not path.startswith("/"):
        path = "/" + path
    return path


def cgroup_within(cgroup: str | None, root: str) -> bool:
    if cgroup is None:
        return False
    if root == "/":
        return True
    return cgroup == root or cgroup.startswith(root + "/")


def cgroup_fs_path(cgroup: str, mount: str | None = None) -> str | None:
    mount = cgroup2_mount() if mount is None else mount
    if mount is None:
        return None
    return mount.rstrip("/") + (cgroup if cgroup != "/" else "")


# -- a consistent-enough picture of all processes ----------------------------------------------


@dataclass
class ProcessTable:
    """All processes' stat lines at one moment, with the parent/child tree."""

    stats: dict[int, ProcStat]
    children: dict[int, list[int]] = field(default_factory=dict)

    @classmethod
    def scan(cls) -> ProcessTable:
        stats: dict[int, ProcStat] = {}
        for pid in list_pids():
            stat = read_stat(pid)
            if stat is not None:
                stats[pid] = stat
        table = cls(stats=stats)
        for stat in stats.values():
            table.children.setdefault(stat.ppid, []).append(stat.pid)
        return table

    def descendants(self, pid: int) -> set[int]:
        found: set[int] = set()
        stack = list(self.children.get(pid, ()))
        while stack:
            child = stack.pop()
            if child in found:
                continue
            found.add(child)
            stack.extend(self.children.get(child, ()))
        return found

    def ancestors(self, pid: int) -> list[int]:
        """Parent first, up to (and including) PID 1 if reachable."""
        chain: list[int] = []
        seen = {pid}
        stat = self.stats.get(pid)
        while stat is not None and stat.ppid not in seen and stat.ppid > 0:
            chain.append(stat.ppid)
            seen.add(stat.ppid)
            stat = self.stats.get(stat.ppid)
        return chain

    def group_members(self, pgid: int) -> list[int]:
        return [pid for pid, stat in self.stats.items() if stat.pgid == pgid]


class ProcessInfo:
    """A user process in scope, with the details classification needs. Each detail is read from
    /proc the first time it is asked for: a process that is never-stop by its comm (sshd, systemd-*)
    costs no more reads, and only candidates' sizes and open files are read -- under TCG every
    /proc read of a scan is on the path from the pressure crossing to the stop."""

    def __init__(self, stat: ProcStat, control_env: str, cgroup: str | None = None) -> None:
        self.stat = stat
        self._control_env = control_env
        if cgroup is not None:
            self.__dict__["cgroup"] = cgroup  # already read (the scope check)

    @property
    def pid(self) -> int:
        return self.stat.pid

    @property
    def comm(self) -> str:
        return self.stat.comm

    @functools.cached_property
    def exe(self) -> str | None:
        return read_exe(self.pid)

    @functools.cached_property
    def argv(self) -> tuple[str, ...]:
        return tuple(read_cmdline(self.pid))

    @functools.cached_property
    def cgroup(self) -> str | None:
        return read_cgroup(self.pid)

    @functools.cached_property
    def oom_score_adj(self) -> int | None:
        return read_oom_score_adj(self.pid)

    @functools.cached_property
    def has_control_env(self) -> bool:
        return environ_contains(self.pid, self._control_env)

    @functools.cached_property
    def memory(self) -> MemoryUsage:
        return read_memory(self.pid)

    def names(self) -> set[str]:
        """Names a --protect-comm/--never-stop may use: comm, basenames of argv[0] and argv[1]."""
        found = {self.stat.comm}
        for arg in self.argv[:2]:
            if arg:
                found.add(os.path.basename(arg))
        return found


def read_process_info(stat: ProcStat, control_env: str, cgroup: str | None = None) -> ProcessInfo:
    return ProcessInfo(stat, control_env, cgroup)
