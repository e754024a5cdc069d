"""Making machines and owning their cleanup: every machine a factory made is stopped by
`close()`, after its evidence is saved when the caller asks (a failed test, --vm-keep)."""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.accel import Accel
from harness.config import Backend, VMSpec
from harness.errors import ConfigError
from harness.guestcode import bundle_digest, install_guest_code
from harness.host.placement import Placement
from harness.image.guest_image import GuestImage
from harness.image.sshkey import SshKey
from harness.machine.base import Machine
from harness.machine.sharedram import RamMode, shared_ram_supported
from harness.machine.snapshot import RAM_IMAGE, SnapshotStore, restorable, snapshot_key
from harness.runtime import Run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StartRecord:
    """One machine start, for "what did this test wait for" (`make slowest`)."""

    name: str
    #: cold-boot | restore-shared | restore-streamed | template (a boot plus the save)
    kind: str
    backend: str
    seconds: float


@dataclass
class MachineFactory:
    image: GuestImage
    accel: Accel
    key: SshKey
    run: Run
    defaults: VMSpec = field(default_factory=VMSpec)
    libvirt_uri: str | None = None
    #: Where saved states live; None = always boot (--vm-fresh-boot).
    snapshots: SnapshotStore | None = None
    #: How restored guests get their RAM: mapped from the saved RAM image (SHARED) or loaded
    #: from the full stream (STREAMED, the older path and the fallback where the guard that
    #: keeps the shared image whole cannot run). Each has its own saved state.
    ram_mode: RamMode = field(default_factory=lambda: RamMode.SHARED if shared_ram_supported() else RamMode.STREAMED)
    machines: list[Machine] = field(default_factory=list)
    starts: list[StartRecord] = field(default_factory=list)
    #: Where the machines it makes run (a scenario's budget cgroup and evidence folder);
    #: templates booted to be saved never get it.
    placement: Placement | None = None
    _counter: int = 0
    #: create() and template saves may run in several threads at once (a scenario starts its
    #: guests in parallel): names and numbers are taken under this lock.
    _naming: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def create(self, spec: VMSpec | None = None, *, placement: Placement | None = None,
               **overrides) -> Machine:
        """A machine, not yet started. Names are made unique within this factory. `placement`
        (where it runs) defaults to the factory's."""
        spec = (spec or self.defaults).with_(**overrides) if overrides else (spec or self.defaults)
        with self._naming:
            taken = {m.name for m in self.machines}
            if spec.name in taken:
                base = re.sub(r"-\d+$", "", spec.name)
                n = 2
                while f"{base}-{n}" in taken:
                    n += 1
                spec = spec.with_(name=f"{base}-{n}")
            number = self._next_number()
            instance_id = f"bh-{self.run.run_id}-{spec.name}-{number}"
            vm_dir = self.run.vm_dir(f"{spec.name}-{number}")
            machine = self._construct(spec, vm_dir, instance_id)
            machine.placement = placement if placement is not None else self.placement
            self.machines.append(machine)
        return machine

    def _next_number(self) -> int:
        """A number no other machine or template of this factory has (the caller holds _naming)."""
        self._counter += 1
        return self._counter

    def _construct(self, spec: VMSpec, vm_dir: Path, instance_id: str) -> Machine:
        if spec.backend is Backend.QEMU:
            from harness.machine.qemu import QemuMachine
            return QemuMachine(spec, self.image, self.accel, self.key, vm_dir, instance_id)
        if spec.backend is Backend.LIBVIRT:
            from harness.machine.libvirt import LibvirtMachine
            return LibvirtMachine(spec, self.image, self.accel, self.key, vm_dir, instance_id,
                                  run=self.run, uri=self.libvirt_uri)
        raise ConfigError(f"Unknown backend {spec.backend!r}.", fix="use qemu or libvirt.")

    def start(self, spec: VMSpec | None = None, *, fresh: bool = False, settle: bool = True,
              placement: Placement | None = None, ram_mode: RamMode | None = None,
              **overrides) -> Machine:
        """A machine, ready (a command over SSH works) and, with `settle`, done booting
        (swap on, every unit started): restored from the saved state of its configuration
        when there is one (made now if missing), booted when `fresh`, when snapshots are
        off, or when the VM asks for something a snapshot cannot show (extra kernel or QEMU
        arguments). `placement` and `ram_mode` override the factory's for this machine only."""
        ram_mode = ram_mode or self.ram_mode
        machine = self.create(spec, placement=placement, **overrides)
        started = time.monotonic()
        if not fresh and self.snapshots is not None and restorable(machine.spec):
            from harness.machine.qemu import QemuMachine
            assert isinstance(machine, QemuMachine)
            key = self.state_key(machine.spec, ram_mode)
            saved = self.snapshots.ensure(key, lambda folder: self._save_template(machine.spec, folder, ram_mode))
            if saved.has_shared_ram and not saved.ram_image_intact():
                # Restored guests map it copy-on-write and never write it: something else did.
                log.warning("the RAM image of %s changed since it was saved; saving it again", saved.folder)
                self.snapshots.discard(key, saved)
                saved = self.snapshots.ensure(key, lambda folder: self._save_template(machine.spec, folder, ram_mode))
            machine.restore_from(saved)
            started = time.monotonic()  # a template made just now is booked on its own
        machine.start()
        if settle:
            try:
                machine.wait_booted()
            except BaseException:
                self.release(machine)
                raise
        mode = getattr(machine, "ram_mode", None)
        kind = f"restore-{mode.value}" if mode is not None and getattr(machine, "restored", False) else "cold-boot"
        self.starts.append(StartRecord(machine.name, kind, machine.spec.backend.value,
                                       round(time.monotonic() - started, 2)))
        return machine

    def state_key(self, spec: VMSpec, ram_mode: RamMode | None = None) -> str:
        """The saved state a restore of `spec` needs: image, configuration, QEMU and its
        command line, and the guest code synced into the template."""
        from harness.machine.qemu import machine_signature, qemu_binary
        return snapshot_key(self.image.identity, spec, self.accel.value, qemu_binary(),
                            machine_signature(spec, self.image, self.accel) + bundle_digest() + (ram_mode or self.ram_mode).value)

    def _save_template(self, spec: VMSpec, folder: Path, ram_mode: RamMode) -> dict:
        """Boot a guest of this configuration, wait until it is ready, save it."""
        log.info("no saved state for %s MiB / %s vCPU / swap %s yet: booting one to save",
                 spec.memory_mib, spec.cpus, spec.swap)
        with self._naming:
            number = self._next_number()
        template = self._construct(spec.with_(name="template"), self.run.vm_dir(f"template-{number}"),
                                   f"bh-{self.run.run_id}-template-{number}")
        if ram_mode is RamMode.SHARED:
            template.template_ram = folder / RAM_IMAGE  # type: ignore[attr-defined]
        started = time.monotonic()
        try:
            template.start()
            boot_s = (template.ready_at or 0) - (template.started_at or 0)
            install_guest_code(template)  # the host's version, whatever the image baked in
            meta = template.save_state(folder)
            self.starts.append(StartRecord("template", "template", spec.backend.value,
                                           round(time.monotonic() - started, 2)))
            return {"boot_seconds": round(boot_s, 2), **meta}
        finally:
            template.kill()
            shutil.rmtree(template.vm_dir, ignore_errors=True)

    def release(self, machine: Machine, artifacts_dir: Path | None = None) -> None:
        """Stop one machine and remove its files; with `artifacts_dir`, save its evidence first."""
        try:
            if artifacts_dir is not None:
                machine.collect_artifacts(artifacts_dir / machine.name)  # unique among the live ones
        except Exception:
            log.exception("collecting artifacts of %s failed", machine.name)
        try:
            machine.stop()
        except Exception:
            log.exception("stopping %s failed; killing it", machine.name)
            machine.kill()
        shutil.rmtree(machine.vm_dir, ignore_errors=True)
        if machine in self.machines:
            self.machines.remove(machine)

    def close(self, artifacts_dir: Path | None = None) -> None:
        """Stop everything; with `artifacts_dir`, save each machine's evidence there first."""
        for machine in reversed(list(self.machines)):
            self.release(machine, artifacts_dir)
