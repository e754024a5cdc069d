"""`--vm-image PATH`: a user's own cloud image (a qcow2 with its own bootloader and kernel)
boots the way such images do — firmware, its bootloader, cloud-init reading the harness's
seed — and gets the hostname, login key and swap the VM description asks for.

The image here is the built image's disk, copied and made bootable as a cloud image is
(extlinux in its boot sector, its own /boot kernel and initramfs): the built disk alone has
no bootloader, and this host cannot download one. One cold boot through cloud-init: the
slowest path there is (tens of seconds under TCG)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.config import BootPath, SwapSpec
from harness.image.guest_image import ImageKind
from harness.image.resolve import resolve_image

EXTLINUX_CONF = """DEFAULT linux
TIMEOUT 0
PROMPT 0
LABEL linux
  LINUX /boot/{kernel}
  INITRD /boot/{initrd}
  APPEND root=/dev/vda rw console=ttyS0 net.ifnames=0 bh.marker=user-image
"""


def run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stdout}{done.stderr}"


@pytest.fixture
def user_image(vm_image, tmp_path) -> Path:
    """A bootable qcow2 of the built image's root filesystem, at a path of the user's."""
    if os.geteuid() != 0:
        pytest.skip("making a bootable disk here needs root (a loop mount for extlinux)")
    if not shutil.which("extlinux"):
        pytest.skip("extlinux is not installed: apt-get install extlinux")
    raw, mnt = tmp_path / "disk.raw", tmp_path / "mnt"
    mnt.mkdir()
    run("qemu-img", "convert", "-f", vm_image.disk_format, "-O", "raw", str(vm_image.disk), str(raw))
    run("mount", "-o", "loop", str(raw), str(mnt))
    try:
        boot = mnt / "boot"
        kernel = sorted(boot.glob("vmlinuz-*"))[-1].name
        initrd = f"initrd.img-{kernel.removeprefix('vmlinuz-')}"
        assert (boot / initrd).exists(), sorted(p.name for p in boot.iterdir())
        (boot / "extlinux").mkdir()
        (boot / "extlinux" / "extlinux.conf").write_text(EXTLINUX_CONF.format(kernel=kernel, initrd=initrd))
        run("extlinux", "--install", str(boot / "extlinux"))
    finally:
        run("umount", str(mnt))  # the loop device goes with it (mount -o loop sets autoclear)
    image = tmp_path / "my-cloud-image.qcow2"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(image))
    raw.unlink()
    return image


def test_a_local_cloud_image_boots_through_its_bootloader_and_cloud_init(vm_factory, user_image):
    image = resolve_image(str(user_image))  # what --vm-image PATH resolves to
    assert image.kind is ImageKind.CLOUD and image.disk == user_image and image.disk_format == "qcow2"
    assert not image.direct_kernel_boot
    vm_factory.image = image
    vm = vm_factory.start(name="byoi", swap=SwapSpec.parse("file:128"))
    assert vm.spec.boot_path is BootPath.CLOUD_INIT and not getattr(vm, "restored", False)
    assert "-kernel" not in vm.command_line()  # the firmware booted the disk
    out = vm.ssh.run("hostname; cloud-init status; cat /proc/cmdline; cat /proc/swaps").stdout.splitlines()
    hostname, status, cmdline, swaps = out[0], out[1], out[2], out[3:]
    assert hostname == "byoi"  # from the seed, applied by cloud-init
    assert status == "status: done"
    assert "bh.marker=user-image" in cmdline and "bh.lean" not in cmdline  # its own bootloader's line
    # The swap the description asks for, made by cloud-init (no harness unit in the image runs).
    assert [line.split()[:3] for line in swaps[1:]] == [["/swapfile", "file", str(128 * 1024 - 4)]], swaps
    assert user_image.exists(), "the user's image is used, never moved"
