"""Boot once, restore many: a booted, ready guest saved to disk (QMP migration to a file
plus its frozen disk overlay), and new guests restored from it.

A saved state holds either the template's RAM image (ram.img: its RAM ran in that file) and
its device state alone (devices.bin: saved with x-ignore-shared), which restored guests map
copy-on-write and load (harness.machine.sharedram), or, on the older streamed path, the full
migration stream with the RAM in it (state.bin), loaded into anonymous memory. Which one is
part of the key.

The saved state is keyed by everything that shapes it (image, memory, vCPUs, swap, boot
path, balloon device options, accelerator, QEMU version), kept in the image cache, created under a file lock (so
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
#: 3: and a RAM image mapped by restored guests (ram.img + devices.bin), or state.bin.
#: 4: every machine has the virtio-serial evidence port.
SNAPSHOT_VERSION = "4"
DISK, STATE, META = "disk.qcow2", "state.bin", "meta.json"
RAM_IMAGE, DEVICE_STATE = "ram.img", "devices.bin"


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
    def ram_image(self) -> Path:
        return self.folder / RAM_IMAGE

    @property
    def device_state(self) -> Path:
        return self.folder / DEVICE_STATE

    def incoming_uri(self, shared_ram: bool) -> str:
        return f"exec:cat {self.device_state if shared_ram else self.state}"

    @property
    def has_shared_ram(self) -> bool:
        return self.device_state.exists()

    def ram_image_intact(self) -> bool:
        """The RAM image still has the size and mtime it was saved with: nothing wrote to it
        (restored guests map it copy-on-write and must never change it)."""
        expected = self.meta().get("ram_image")
        try:
            st = self.ram_image.stat()
        except OSError:
            return False
        return bool(expected) and [st.st_size, st.st_mtime_ns] == expected

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


def snapshot_key(image_identity: str, spec: VMSpec, accel: str, qemu_binary: str,
                 machine_signature: str = "") -> str:
    """`machine_signature`: the QEMU command line with per-VM paths left out; any device
    option that changes it (and so the device state a restore must match) keys a new state."""
    parts = [SNAPSHOT_VERSION, image_identity, str(spec.memory_mib), str(spec.cpus), str(spec.swap),
             spec.boot_path.value, str(spec.balloon_stats_interval_s), accel, _qemu_version(qemu_binary),
             # Device properties are in the migration stream: a restore needs the same ones
             # (the command line holds them too, where the caller has one).
             spec.balloon.qemu_properties(), machine_signature]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


def set_ignore_shared(qmp: QmpConnection, on: bool) -> None:
    qmp.execute("migrate-set-capabilities", {"capabilities": [{"capability": "x-ignore-shared", "state": on}]})


def save_running(qmp: QmpConnection, state_file: Path, timeout: float, *, devices_only: bool = False) -> float:
    """Pause the guest (if running) and stream its state to `state_file`; returns seconds
    taken. `devices_only`: leave out RAM that lives in a shared file (x-ignore-shared). A
    paused guest can be saved several times."""
    started = time.monotonic()
    qmp.execute("stop")
    # No throttling: the guest is paused, the only limit is the disk.
    qmp.execute("migrate-set-parameters", {"max-bandwidth": 64 << 30})
    set_ignore_shared(qmp, devices_only)
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

    def discard(self, key: str, saved: SavedState) -> None:
        """Remove a damaged saved state (guests already running keep their mapping)."""
        with self.cache.lock(f"snapshot-{key}"):
            current = self.load(key)
            if current is not None and current.meta().get("created") == saved.meta().get("created"):
                shutil.rmtree(self.folder(key), ignore_errors=True)

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
