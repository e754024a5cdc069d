"""Host programs the harness runs, and how to install each one on Debian/Ubuntu."""

from __future__ import annotations

import shutil

from harness.errors import MissingDependency

#: program -> Debian package that provides it
PACKAGES = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "mmdebstrap": "mmdebstrap",
    "mkfs.ext4": "e2fsprogs",
    "libvirtd": "libvirt-daemon-system",
    "virsh": "libvirt-clients",
}


def install_hint(tool: str) -> str:
    package = PACKAGES.get(tool, tool)
    return f"sudo apt-get install -y {package}"


def find_tool(tool: str) -> str | None:
    # Daemons such as libvirtd live in sbin, which a non-root PATH often lacks.
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")


def require_tool(tool: str) -> str:
    path = find_tool(tool)
    if path is None:
        raise MissingDependency(f"The program {tool!r} is not installed.", fix=install_hint(tool))
    return path
