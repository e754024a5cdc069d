"""`--vm-swap none|file:MIB|zram:MIB`: the guest really has the swap its description asks
for, and no other (each kind is its own saved state, restored here)."""

import pytest

from harness.config import SwapSpec


def active_swaps(vm) -> list[tuple[str, str, int]]:
    """/proc/swaps: (device or file, type, size KiB) of each active swap area."""
    lines = vm.ssh.run("cat /proc/swaps").stdout.splitlines()
    assert lines[0].split()[0] == "Filename", lines
    return [(f[0], f[1], int(f[2])) for f in (line.split() for line in lines[1:])]


@pytest.mark.parametrize("swap", ["zram:256", "none", "file:512"])
def test_guest_has_exactly_the_swap_it_was_given(vm_factory, swap):
    spec = SwapSpec.parse(swap)
    vm = vm_factory.start(name="swap", swap=spec)
    swaps = active_swaps(vm)
    zram = vm.ssh.run("cat /sys/block/zram0/disksize 2>/dev/null || echo absent").stdout.strip()
    swapfile = vm.ssh.run("stat -c %s /swapfile 2>/dev/null || echo absent").stdout.strip()
    # mkswap keeps one page for its header.
    size_kib = spec.size_mib * 1024 - 4
    if spec.kind.value == "zram":
        assert swaps == [("/dev/zram0", "partition", size_kib)], swaps
        assert zram == str(spec.size_mib << 20)
        assert swapfile == "absent"
    elif spec.kind.value == "file":
        assert swaps == [("/swapfile", "file", size_kib)], swaps
        assert swapfile == str(spec.size_mib << 20)
        assert zram == "absent"
    else:
        assert swaps == [] and zram == "absent" and swapfile == "absent", (swaps, zram, swapfile)
    # What the kernel counts agrees (the ledger and the daemon read it there).
    meminfo = dict(line.split(":") for line in vm.ssh.run("cat /proc/meminfo").stdout.splitlines())
    assert int(meminfo["SwapTotal"].split()[0]) == (size_kib if swaps else 0)
