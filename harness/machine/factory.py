"""Making machines and owning their cleanup: every machine a factory made is stopped by
`close()`, after its evidence is saved when the caller asks (a failed test, --vm-keep)."""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from harness.accel import Accel
from harness.config import Backend, VMSpec
from harness.errors import ConfigError
from harness.image.guest_image import GuestImage
from harness.image.sshkey import SshKey
from harness.machine.base import Machine
from harness.runtime import Run

log = logging.getLogger(__name__)


@dataclass
class MachineFactory:
    image: GuestImage
    accel: Accel
    key: SshKey
    run: Run
    defaults: VMSpec = field(default_factory=VMSpec)
    libvirt_uri: str | None = None
    machines: list[Machine] = field(default_factory=list)
    _counter: int = 0

    def create(self, spec: VMSpec | None = None, **overrides) -> Machine:
        """A machine, not yet started. Names are made unique within this factory."""
        spec = (spec or self.defaults).with_(**overrides) if overrides else (spec or self.defaults)
        taken = {m.name for m in self.machines}
        if spec.name in taken:
            base = re.sub(r"-\d+$", "", spec.name)
            n = 2
            while f"{base}-{n}" in taken:
                n += 1
            spec = spec.with_(name=f"{base}-{n}")
        self._counter += 1
        instance_id = f"bh-{self.run.run_id}-{spec.name}-{self._counter}"
        vm_dir = self.run.vm_dir(f"{spec.name}-{self._counter}")
        machine = self._construct(spec, vm_dir, instance_id)
        self.machines.append(machine)
        return machine

    def _construct(self, spec: VMSpec, vm_dir: Path, instance_id: str) -> Machine:
        if spec.backend is Backend.QEMU:
            from harness.machine.qemu import QemuMachine
            return QemuMachine(spec, self.image, self.accel, self.key, vm_dir, instance_id)
        if spec.backend is Backend.LIBVIRT:
            from harness.machine.libvirt import LibvirtMachine
            return LibvirtMachine(spec, self.image, self.accel, self.key, vm_dir, instance_id,
                                  run=self.run, uri=self.libvirt_uri)
        raise ConfigError(f"Unknown backend {spec.backend!r}.", fix="use qemu or libvirt.")

    def start(self, spec: VMSpec | None = None, **overrides) -> Machine:
        """A machine, booted and ready (a command over SSH works)."""
        machine = self.create(spec, **overrides)
        machine.start()
        return machine

    def close(self, artifacts_dir: Path | None = None) -> None:
        """Stop everything; with `artifacts_dir`, save each machine's evidence there first."""
        for machine in reversed(self.machines):
            try:
                if artifacts_dir is not None:
                    machine.collect_artifacts(artifacts_dir / machine.vm_dir.name)
            except Exception:  # noqa: BLE001 - evidence is best effort; cleanup is not
                log.exception("collecting artifacts of %s failed", machine.name)
            try:
                machine.stop()
            except Exception:  # noqa: BLE001
                log.exception("stopping %s failed; killing it", machine.name)
                machine.kill()
            shutil.rmtree(machine.vm_dir, ignore_errors=True)
        self.machines.clear()
