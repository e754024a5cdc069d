"""Boot once, restore many: a booted, ready guest saved to disk (QMP migration to a file
plus its frozen disk overlay), and new guests restored from it in a second or two.

The saved state is keyed by everything that shapes it (image, memory, vCPUs, swap, boot
path, accelerator, QEMU version), kept in the image cache, created under a file lock (so
xdist workers and parallel jobs share one), and published by rename (never half-written).
Each restored guest gets its own copy-on-write overlay on the frozen disk; per-VM state is
fixed after `cont`: clock, hostname, and the kernel RNG (reseeded from the host).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.config import Backend, BootPath, VMSpec
from harness.errors import HarnessError
from harness.image.cache import ImageCache
from harness.machine.qmp import QmpConnection
from harness.waiting import Deadline

log = logging.getLogger(__name__)

#: 2: the saved guest has a host key of its own, recorded in meta.json.
SNAPSHOT_VERSION = "2"
DISK, STATE, META = "disk.qcow2", "state.bin", "meta.json"


@dataclass(frozen=True)
class SavedState:
    folder: Path

    @property
    def disk(self) -> Path:
        return self.folder / DISK

    @property
    def state(self) -> Path:
        return self.folder / STATE

    @property
    def incoming_uri(self) -> str:
        return f"exec:cat {self.state}"

    def meta(self) -> dict:
        return json.loads((self.folder / META).read_text())

    @property
    def host_key(self) -> str:
        """The saved guest's public SSH host key: every guest restored from it presents it."""
        key = self.meta().get("host_key")
        if not key:
            raise HarnessError(f"The saved state {self.folder} records no SSH host key.",
                               fix=f"delete {self.folder}; the next run saves a new one.")
        return key


def restorable(spec: VMSpec) -> bool:
    """Only plain VMs are snapshotted: extra kernel or QEMU arguments mean a test wants to
    see a boot (or a failure to boot) happen."""
    return (spec.backend is Backend.QEMU and spec.boot_path is BootPath.LEAN
            and not spec.extra_kernel_args and not spec.extra_qemu_args)


@functools.cache  # every restore computes a key; the binary does not change under us
def _qemu_version(binary: str) -> str:
    try:
        return subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout.split("\n")[0]
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def snapshot_key(image_identity: str, spec: VMSpec, accel: str, qemu_binary: str) -> str:
    parts = [SNAPSHOT_VERSION, image_identity, str(spec.memory_mib), str(spec.cpus), str(spec.swap),
             spec.boot_path.value, str(spec.balloon_stats_interval_s), accel, _qemu_version(qemu_binary)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


def save_running(qmp: QmpConnection, state_file: Path, timeout: float) -> float:
    """Pause the guest and stream its state to `state_file`; returns seconds taken."""
    started = time.monotonic()
    qmp.execute("stop")
    # No throttling: the guest is paused, the only limit is the disk.
    qmp.execute("migrate-set-parameters", {"max-bandwidth": 64 << 30})
    qmp.execute("migrate", {"uri": f"exec:cat > {state_file}"})
    info = wait_migration(qmp, timeout)
    status = info.get("status")
    if status == "completed":
        return time.monotonic() - started
    if status in ("failed", "cancelled"):
        raise HarnessError(f"Saving the guest state failed: {info.get('error-desc', status)}.")
    raise HarnessError(f"Saving the guest state did not finish in {timeout:.0f} s.")


def wait_migration(qmp: QmpConnection, timeout: float, alive: Callable[[], bool] = lambda: True) -> dict:
    """Poll `query-migrate` (woken by MIGRATION events) until the migration has ended
    (completed, failed, cancelled), QEMU is no longer `alive`, or the deadline passes;
    returns the last answer and leaves judging it to the caller."""
    deadline = Deadline(timeout)
    while True:
        info = qmp.execute("query-migrate")
        if info.get("status") in ("completed", "failed", "cancelled") or not alive() or deadline.expired():
            return info
        qmp.wait_event("MIGRATION", timeout=0.2)


class SnapshotStore:
    def __init__(self, cache: ImageCache) -> None:
        self.cache = cache

    def folder(self, key: str) -> Path:
        return self.cache.snapshots / key

    def load(self, key: str) -> SavedState | None:
        folder = self.folder(key)
        return SavedState(folder) if (folder / META).exists() else None

    def ensure(self, key: str, create) -> SavedState:
        """The saved state for `key`, calling `create(tmp_folder) -> dict` to make it if
        needed (once, under a lock; the folder appears complete or not at all)."""
        if saved := self.load(key):
            return saved
        with self.cache.lock(f"snapshot-{key}"):
            if saved := self.load(key):
                return saved
            final = self.folder(key)
            work = final.with_name(f".{key}.tmp-{secrets.token_hex(3)}")
            work.mkdir(parents=True)
            try:
                meta = create(work)
                (work / META).write_text(json.dumps({"key": key, "created": time.time(), **meta}, indent=2) + "\n")
                shutil.rmtree(final, ignore_errors=True)
                work.rename(final)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        saved = self.load(key)
        assert saved is not None
        return saved
