"""What a VM boots from: a base disk (never written) plus, for the built image, the
kernel and initrd for direct kernel boot."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path


class ImageKind(enum.Enum):
    #: Built here by the recipe: direct kernel boot, lean seed handling in the initrd.
    BUILT = "built"
    #: A user-supplied cloud image: boots through its own bootloader, cloud-init reads the seed.
    CLOUD = "cloud"


@dataclass(frozen=True)
class GuestImage:
    kind: ImageKind
    disk: Path
    disk_format: str
    #: Stable identity of the content (recipe hash or sha256), used to name snapshots.
    identity: str
    kernel: Path | None = None
    initrd: Path | None = None
    lean_cmdline: tuple[str, ...] = ()
    cloud_init_cmdline: tuple[str, ...] = ()
    ssh_user: str = "root"
    description: str = ""

    @property
    def direct_kernel_boot(self) -> bool:
        return self.kernel is not None

    @property
    def supports_lean_boot(self) -> bool:
        return self.kind is ImageKind.BUILT and bool(self.lean_cmdline)
