"""The description of one VM: plain dataclasses and enums, validated on construction."""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass, field, replace

from harness.accel import TIMEOUT_SCALE, Accel
from harness.errors import ConfigError


class SwapKind(enum.Enum):
    NONE = "none"
    FILE = "file"
    ZRAM = "zram"


@dataclass(frozen=True)
class SwapSpec:
    kind: SwapKind = SwapKind.FILE
    size_mib: int = 512

    @classmethod
    def parse(cls, text: str) -> SwapSpec:
        """`none`, `file:512`, `zram:256` (MiB)."""
        text = text.strip().lower()
        if text in ("none", "off", "0"):
            return cls(SwapKind.NONE, 0)
        match = re.fullmatch(r"(file|zram):(\d+)", text)
        if not match:
            raise ConfigError(f"Invalid swap {text!r}.", fix="write none, file:MIB or zram:MIB.")
        return cls(SwapKind(match[1]), int(match[2]))

    def cmdline(self) -> str:
        return "bh.swap=none" if self.kind is SwapKind.NONE else f"bh.swap={self.kind.value}:{self.size_mib}"

    def __str__(self) -> str:
        return "none" if self.kind is SwapKind.NONE else f"{self.kind.value}:{self.size_mib}"


class BootPath(enum.Enum):
    #: Built image only: the initrd applies the seed, sshd starts first (seconds).
    LEAN = "lean"
    #: cloud-init applies the seed: the path of every cloud image (tens of seconds on TCG).
    CLOUD_INIT = "cloud-init"


class Backend(enum.Enum):
    QEMU = "qemu"
    LIBVIRT = "libvirt"


@dataclass(frozen=True)
class Timeouts:
    """Seconds, before scaling. Scaled by the accelerator (TCG is several times slower than
    KVM); BALLOON_HARNESS_TIMEOUT_SCALE multiplies on top for slow or loaded machines."""

    boot: float = 30.0
    command: float = 20.0
    shutdown: float = 5.0
    qmp: float = 10.0

    def scaled(self, accel: Accel) -> Timeouts:
        factor = TIMEOUT_SCALE.get(accel, 6.0) * float(os.environ.get("BALLOON_HARNESS_TIMEOUT_SCALE", "1"))
        return Timeouts(boot=self.boot * factor, command=self.command * factor,
                        shutdown=self.shutdown * factor, qmp=self.qmp * max(1.0, factor / 2))


@dataclass(frozen=True)
class BalloonDevice:
    """virtio-balloon device properties (all off by default, as in QEMU). They shape the
    device, so they are part of a saved state's key."""

    #: The guest reports free 2 MiB blocks to the host, which drops them (QEMU >= 5.1,
    #: guest Linux >= 5.7; libvirt freePageReporting).
    free_page_reporting: bool = False
    #: The guest takes pages back from the balloon instead of OOM-killing (libvirt autodeflate).
    deflate_on_oom: bool = False

    def qemu_properties(self) -> str:
        on = {"free-page-reporting": self.free_page_reporting, "deflate-on-oom": self.deflate_on_oom}
        return "".join(f",{name}=on" for name, value in on.items() if value)


@dataclass(frozen=True)
class VMSpec:
    name: str = "vm"
    memory_mib: int = 1024
    cpus: int = 2
    accel: Accel = Accel.AUTO
    swap: SwapSpec = field(default_factory=SwapSpec)
    boot_path: BootPath = BootPath.LEAN
    backend: Backend = Backend.QEMU
    #: Guest statistics polling period of the balloon device (QOM guest-stats-polling-interval).
    balloon_stats_interval_s: int = 1
    balloon: BalloonDevice = field(default_factory=BalloonDevice)
    #: None = derived from the accelerator; set to override every deadline explicitly.
    timeouts: Timeouts | None = None
    extra_kernel_args: tuple[str, ...] = ()
    extra_qemu_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,30}", self.name):
            raise ConfigError(f"VM name {self.name!r} is not usable as a hostname.",
                              fix="use lowercase letters, digits and '-', at most 31 characters.")
        if not 128 <= self.memory_mib <= 1 << 20:
            raise ConfigError(f"VM memory {self.memory_mib} MiB is out of range.",
                              fix="give between 128 MiB and 1 TiB.")
        if not 1 <= self.cpus <= 64:
            raise ConfigError(f"VM cpus {self.cpus} is out of range.", fix="give 1 to 64.")

    def with_(self, **changes) -> VMSpec:
        return replace(self, **changes)

    def timeouts_for(self, accel: Accel) -> Timeouts:
        return self.timeouts or Timeouts().scaled(accel)
