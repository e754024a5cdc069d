"""What the pytest plugin and the CLI share: turning options into a ready MachineFactory."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.accel import Accel, resolve
from harness.config import Backend, SwapSpec, VMSpec
from harness.errors import ConfigError
from harness.image.cache import ImageCache
from harness.image.guest_image import GuestImage
from harness.image.resolve import resolve_image
from harness.image.sshkey import SshKey, ensure_ssh_key
from harness.machine.factory import MachineFactory
from harness.machine.snapshot import SnapshotStore
from harness.runtime import current_run

log = logging.getLogger(__name__)


def env_default(name: str, default: str) -> str:
    return os.environ.get(f"BALLOON_HARNESS_{name}", default)


ACCEL_CHOICES = ("auto", "kvm", "tcg")
BACKEND_CHOICES = tuple(b.value for b in Backend)


@dataclass(frozen=True)
class HarnessOptions:
    """Everything a user can choose from the command line (pytest or CLI)."""

    accel: str = "auto"
    image: str | None = None
    memory_mib: int = 1024
    cpus: int = 2
    swap: str = "file:512"
    backend: str = "qemu"
    libvirt_uri: str | None = None
    fresh_boot: bool = False

    @classmethod
    def from_env(cls) -> HarnessOptions:
        """The defaults of the options the pytest plugin and the CLI share: each field's own,
        unless its BALLOON_HARNESS_* variable (ENV_NAMES) is set; a bad value is a clear error."""
        changes = {}
        for name, suffix in ENV_NAMES.items():
            if value := os.environ.get(f"BALLOON_HARNESS_{suffix}", "").strip():
                changes[name] = _checked(name, f"BALLOON_HARNESS_{suffix}", value)
        return replace(cls(), **changes)

    def vm_spec(self, accel: Accel, name: str = "vm") -> VMSpec:
        return VMSpec(name=name, memory_mib=self.memory_mib, cpus=self.cpus, accel=accel,
                      swap=SwapSpec.parse(self.swap), backend=Backend(self.backend))


#: HarnessOptions field -> the BALLOON_HARNESS_<NAME> variable behind its default (README,
#: "Environment variables").
ENV_NAMES = {"accel": "ACCEL", "image": "IMAGE", "memory_mib": "MEMORY", "cpus": "CPUS",
             "swap": "SWAP", "backend": "BACKEND", "libvirt_uri": "LIBVIRT_URI"}


def _checked(name: str, variable: str, value: str) -> str | int:
    """`value` of `variable`, checked as the option `name` checks its own."""
    choices = {"accel": ACCEL_CHOICES, "backend": BACKEND_CHOICES}.get(name)
    if choices and value not in choices:
        raise ConfigError(f"{variable}={value!r} is not one of {', '.join(choices)}.",
                          fix=f"set {variable} to one of them, or unset it.")
    if name in ("memory_mib", "cpus"):
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{variable}={value!r} is not a whole number.",
                              fix=f"set {variable} to a number, or unset it.") from None
    if name == "swap":
        try:
            SwapSpec.parse(value)
        except ConfigError as exc:
            raise ConfigError(f"{variable}: {exc.message}", fix=exc.fix) from None
    return value


@dataclass
class HarnessSession:
    """Resolved once per process: accelerator, image, key."""

    options: HarnessOptions
    accel: Accel
    image: GuestImage
    key: SshKey
    cache: ImageCache = field(default_factory=ImageCache.default)

    @classmethod
    def open(cls, options: HarnessOptions,
             progress: Callable[[str], None] = lambda m: log.info("%s", m)) -> HarnessSession:
        accel = resolve(options.accel)  # an unusable explicit KVM fails here, before any build
        Backend(options.backend)
        cache = ImageCache.default()
        image = resolve_image(options.image, cache, progress)
        return cls(options, accel, image, ensure_ssh_key(cache), cache)

    def factory(self, fresh_boot: bool | None = None) -> MachineFactory:
        fresh = self.options.fresh_boot if fresh_boot is None else fresh_boot
        return MachineFactory(self.image, self.accel, self.key, current_run(),
                              defaults=self.options.vm_spec(self.accel),
                              libvirt_uri=self.options.libvirt_uri,
                              snapshots=None if fresh else SnapshotStore(self.cache))


def artifacts_root(path: str | None) -> Path:
    return Path(path or env_default("ARTIFACTS", "artifacts")).resolve()
