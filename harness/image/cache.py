"""The per-user image cache: built images, downloads and the SSH key, shared safely by
concurrent pytest-xdist workers and CI jobs (file locks; results published by rename)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import filelock
import platformdirs

from harness.errors import ImageError

#: A build holds its lock for about a minute; a waiter gives up well after that.
LOCK_TIMEOUT_S = 1800.0


def default_cache_root() -> Path:
    env = os.environ.get("BALLOON_HARNESS_CACHE")
    return Path(env) if env else Path(platformdirs.user_cache_dir("balloon-harness"))


@dataclass(frozen=True)
class ImageCache:
    root: Path

    @classmethod
    def default(cls) -> ImageCache:
        return cls(default_cache_root())

    def subdir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def images(self) -> Path:
        return self.subdir("images")

    @property
    def downloads(self) -> Path:
        return self.subdir("downloads")

    @property
    def keys(self) -> Path:
        return self.subdir("keys")

    @property
    def snapshots(self) -> Path:
        return self.subdir("snapshots")

    @contextmanager
    def lock(self, name: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        lock = filelock.FileLock(str(self.subdir("locks") / f"{name}.lock"), timeout=timeout)
        try:
            with lock:
                yield
        except filelock.Timeout:
            raise ImageError(f"Waited {timeout:.0f} s for the cache lock {name!r}; another "
                             f"build or download still holds it.",
                             fix=f"wait for it to finish, or remove {lock.lock_file} if no "
                                 f"balloon-harness process is running.") from None
