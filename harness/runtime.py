"""Per-run scratch space and the record the reaper uses to clean up after killed runs.

Every process that starts VMs (a pytest worker, a CLI command) owns one *run*: a folder
`<runtime>/runs/<run-id>/` with `owner.json` (pid and kernel start time of the owner) and a
folder per VM holding its overlay, seed, sockets, serial log and QEMU pid. When the owner
is gone (even SIGKILLed), `balloon-harness reap` kills what the pids still name and
removes the folder.

The runtime folder is trusted only if it is ours: a real folder (not a link), owned by our
uid, mode 0700, inside folders nobody else can rename it out of. Otherwise another local
user who made it first could point `runs` at /etc for root's reap to empty, or swap a QMP
socket before a root QEMU connects to it. Nothing inside is followed through a link.
"""

from __future__ import annotations

import atexit
import json
import os
import pwd
import secrets
import shutil
import stat
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.etree import ElementTree
from xml.sax.saxutils import quoteattr

from harness.errors import HarnessError

RUN_PREFIX = "bh"
SOCKET_PATH_MAX = 107  # sizeof(sun_path) - 1
SOCKET_NAME_ROOM = "qmp.sock"  # the longest socket name a VM folder holds
ENV = "BALLOON_HARNESS_RUNTIME"


class UnsafeRuntimeFolder(HarnessError):
    """The runtime folder (or a folder above it) is not ours alone."""


def _user(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _elsewhere_fix(path: Path) -> str:
    return (f"remove {path} if it is a leftover nobody uses, or set {ENV} to a folder of your "
            f"own (mode 0700) whose parents only you and root can write, such as /tmp/<name> or "
            f"a folder in your home.")


def _check_parents(path: Path) -> None:
    """Every folder above `path` must be one that only root or we can rename entries in:
    owned by one of us, and not writable by others unless sticky (like /tmp). Links on the
    way must be ours or root's too."""
    me = os.geteuid()
    here = Path(path.anchor)
    for part in path.parent.parts[1:]:
        here = here / part
        st = os.lstat(here)
        if stat.S_ISLNK(st.st_mode):
            if st.st_uid not in (0, me):
                raise UnsafeRuntimeFolder(f"The runtime folder {path} is reached through the "
                                          f"link {here}, which {_user(st.st_uid)} owns and could "
                                          f"point elsewhere.", fix=_elsewhere_fix(path))
            here = Path(os.path.realpath(here))
            st = os.stat(here)
        loose = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX
        if st.st_uid not in (0, me) or loose:
            who = _user(st.st_uid) if st.st_uid not in (0, me) else "other users"
            raise UnsafeRuntimeFolder(f"The runtime folder {path} lies inside {here}, which "
                                      f"{who} can write: the folder could be renamed away and "
                                      f"replaced.", fix=_elsewhere_fix(path))


def private_dir(path: Path, *, others: int = 0o022) -> Path:
    """Make `path` (one level, mode 0700) or accept it only if it is a real folder of ours
    that no one else may write (with `others=0o077`: nor read); never through a link."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        kind = "a symbolic link" if os.path.islink(path) else f"not a usable folder ({exc.strerror})"
        raise UnsafeRuntimeFolder(f"{path} is {kind}; the harness never follows links in its "
                                  f"runtime folder.", fix=_elsewhere_fix(path)) from None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if st.st_uid != os.geteuid():
        raise UnsafeRuntimeFolder(f"{path} belongs to {_user(st.st_uid)}, not to you "
                                  f"({_user(os.geteuid())}): its owner could steer what the "
                                  f"harness deletes and which sockets its QEMU uses.",
                                  fix=_elsewhere_fix(path))
    if stat.S_IMODE(st.st_mode) & others:
        raise UnsafeRuntimeFolder(f"{path} has mode {stat.S_IMODE(st.st_mode):04o}: other users "
                                  f"could plant links or sockets in it.",
                                  fix=f"chmod 700 {path} (if nothing in it is foreign), or remove it.")
    return path


def runtime_root() -> Path:
    env = os.environ.get(ENV)
    # Short path on purpose: unix socket paths are limited to 107 bytes.
    root = Path(os.path.abspath(env)) if env else Path(tempfile.gettempdir()) / f"balloon-harness-{os.getuid()}"
    if env:
        # Missing parents of a chosen folder are made private too.
        os.makedirs(root.parent, mode=0o700, exist_ok=True)
    _check_parents(root)
    return private_dir(root, others=0o077)


def process_start_time(pid: int) -> int | None:
    """Start time in clock ticks since boot (field 22 of /proc/PID/stat); None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def process_alive(pid: int, start_time: int | None) -> bool:
    now = process_start_time(pid)
    return now is not None and (start_time is None or now == start_time)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class Owner:
    """The harness process that owns a run or a libvirt domain. A pid (with its kernel start
    time, so a recycled pid is not mistaken for it) means something only on its own boot of
    its own host; the uid and the runtime folder say whose reaper may judge it."""

    pid: int
    start_time: int | None
    boot_id: str = ""
    host: str = ""
    uid: int = -1
    runtime: str = ""

    @classmethod
    def current(cls) -> Owner:
        return cls(os.getpid(), process_start_time(os.getpid()), _boot_id(), os.uname().nodename,
                   os.geteuid(), str(runtime_root()))

    def alive(self) -> bool:
        return process_alive(self.pid, self.start_time)

    def not_judgeable_from(self, here: Owner) -> str | None:
        """Why `here` cannot tell whether this owner lives (None: it can)."""
        if not self.boot_id or self.boot_id != here.boot_id:
            return f"its owner ran on another host or boot ({self.host or 'unknown host'})"
        if self.uid != here.uid:
            return f"its owner is another user ({self.uid})"
        if self.runtime != here.runtime:
            return f"its owner uses another runtime folder ({self.runtime})"
        return None

    def to_xml(self) -> str:
        return ("<owner " + " ".join(f"{k}={quoteattr(str(v))}" for k, v in asdict(self).items()
                                     if v is not None) + "/>")

    @classmethod
    def from_xml(cls, text: str) -> Owner | None:
        """The <owner .../> element anywhere in `text` (a domain's metadata), or None."""
        try:
            element = ElementTree.fromstring(text).find(".//owner")
            if element is None:
                return None
            a = element.attrib
            start = a.get("start_time")
            return cls(int(a["pid"]), int(start) if start else None, a.get("boot_id", ""),
                       a.get("host", ""), int(a.get("uid", -1)), a.get("runtime", ""))
        except (ElementTree.ParseError, KeyError, ValueError):
            return None


@dataclass(frozen=True)
class Run:
    run_id: str
    path: Path

    @property
    def vms_dir(self) -> Path:
        return self.path / "vms"

    def vm_dir(self, name: str) -> Path:
        """The VM's private folder: its sockets and logs live where only we can write."""
        path = self.vms_dir / name
        # QEMU's and libvirt's sockets live here: a unix socket path holds at most 107 bytes.
        longest = len(os.fsencode(path / SOCKET_NAME_ROOM))
        if longest > SOCKET_PATH_MAX:
            raise HarnessError(
                f"The VM folder {path} is too deep for its unix sockets ({longest} bytes with "
                f"a socket name; the kernel allows {SOCKET_PATH_MAX}).",
                fix=f"set {ENV} to a shorter folder of your own, such as "
                    f"/tmp/bh-{os.getuid()}, or use a shorter VM name.")
        private_dir(self.vms_dir)
        return private_dir(path)

    def owner(self) -> dict:
        try:
            return json.loads((self.path / "owner.json").read_text())
        except (OSError, ValueError):
            return {}

    def owner_alive(self) -> bool:
        owner = self.owner()
        if "pid" not in owner:
            return False
        if owner.get("boot_id") and owner["boot_id"] != _boot_id():
            return False  # /tmp survived a reboot: start times of the old boot mean nothing
        return process_alive(int(owner["pid"]), owner.get("start_time"))


_current: Run | None = None
_lock = threading.Lock()


def current_run() -> Run:
    """The run of this process, created on first use (one per pytest-xdist worker)."""
    global _current
    with _lock:
        # Keyed by pid (a fork gets its own run) and by runtime folder (a changed
        # BALLOON_HARNESS_RUNTIME must not keep handing out a folder under the old one).
        if (_current is None or _current.owner().get("pid") != os.getpid()
                or _current.path.parent.parent != runtime_root()):
            _current = _create_run()
        return _current


def peek_run() -> Run | None:
    """The run of this process if it has one (never creates it)."""
    with _lock:
        if _current is not None and _current.owner().get("pid") == os.getpid():
            return _current
        return None


def _remove_own_run() -> None:
    # A normal exit leaves nothing behind; QEMU children die with us (PR_SET_PDEATHSIG).
    if _current is not None and _current.owner().get("pid") == os.getpid():
        remove_run_dir(_current)


atexit.register(_remove_own_run)


def _create_run() -> Run:
    run_id = f"{os.getpid()}{secrets.token_hex(2)}"
    path = private_dir(runtime_root() / "runs") / run_id
    os.mkdir(path, 0o700)
    owner = {"pid": os.getpid(), "start_time": process_start_time(os.getpid()),
             "boot_id": _boot_id(), "argv": list(sys.argv)}
    tmp = path / "owner.json.tmp"
    tmp.write_text(json.dumps(owner))
    tmp.rename(path / "owner.json")
    return Run(run_id, path)


def all_runs() -> list[Run]:
    """Every run folder; links are not runs (never listed, never followed)."""
    base = private_dir(runtime_root() / "runs")
    with os.scandir(base) as entries:
        return [Run(e.name, Path(e.path)) for e in sorted(entries, key=lambda e: e.name)
                if e.is_dir(follow_symlinks=False)]


def remove_run_dir(run: Run) -> None:
    # rmtree refuses a link at the top and never follows one below (fd-based on Linux).
    if not run.path.is_symlink():
        shutil.rmtree(run.path, ignore_errors=True)
