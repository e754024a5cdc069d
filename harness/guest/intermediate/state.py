"""The state dir: which units are stopped, written atomically BEFORE any signal is sent.

Whoever finds the file after a crash (the watchdog, the next daemon, `resume-all` run by the
systemd unit's ExecStopPost) can resume exactly those processes, checking their start times.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass

from .units import StopUnit

log = logging.getLogger(__name__)

STATE_FILE = "stopped.json"
LOCK_FILE = "lock"
STATE_VERSION = 1


def atomic_write_json(path: str, data: object) -> None:
    """Write to a temp file in the same dir, fsync it, rename it over `path`, fsync the dir."""
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    payload = json.dumps(data, indent=1, sort_keys=True).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@dataclass(frozen=True)
class StoppedRecord:
    unit: StopUnit
    since: float  # time.time() when it was stopped

    def to_dict(self) -> dict[str, object]:
        return {"since": self.since, "unit": self.unit.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> StoppedRecord:
        return cls(unit=StopUnit.from_dict(data["unit"]), since=float(data.get("since", time.time())))


class StateError(Exception):
    pass


class StateStore:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, STATE_FILE)
        self._lock_fd: int | None = None

    def ensure_dir(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)

    def load(self) -> list[StoppedRecord]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise StateError(f"cannot read state file {self.path}: {exc}") from exc
        try:
            return [StoppedRecord.from_dict(item) for item in data.get("stopped", [])]
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"malformed state file {self.path}: {exc}") from exc

    def save(self, records: list[StoppedRecord]) -> None:
        self.ensure_dir()
        atomic_write_json(
            self.path,
            {
                "version": STATE_VERSION,
                "owner_pid": os.getpid(),
                "written": time.time(),
                "stopped": [r.to_dict() for r in records],
            },
        )

    # -- one daemon per state dir --------------------------------------------------------------
    def lock(self) -> None:
        """Take the state dir for this process; StateError if another daemon holds it."""
        self.ensure_dir()
        lock_path = os.path.join(self.directory, LOCK_FILE)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StateError(f"state dir {self.directory} is in use by another daemon (pid {owner})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
