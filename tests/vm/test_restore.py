"""Boot once, restore many: restored guests are independent, have their own name and the
host's time, share the saved RAM image without ever changing it, and a test can still ask for
a real boot or the older streamed restore."""

import hashlib
import time

import pytest

from harness.balloon import BalloonController
from harness.ledger import measure_clock_offset
from harness.machine.sharedram import RamMode


def mapping_kib(pid: int, path) -> dict[str, int]:
    """The /proc/PID/smaps counters (kB) of the mapping of `path`."""
    counters: dict[str, int] = {}
    inside = False
    for line in open(f"/proc/{pid}/smaps"):
        first = line.split(maxsplit=1)[0]
        if not first.endswith(":"):  # a mapping's header line
            inside = line.rstrip().endswith(str(path))
        elif inside and line.split()[-1] == "kB":
            counters[first[:-1]] = counters.get(first[:-1], 0) + int(line.split()[1])
    assert counters, f"{path} is not mapped by {pid}"
    return counters


def file_digest(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def test_the_vm_fixture_restores_by_default(vm, request):
    if request.config.getoption("--vm-fresh-boot"):
        pytest.skip("the whole session boots fresh (--vm-fresh-boot)")
    assert vm.restored
    # The template's uptime came along: the guest kernel did not boot just now.
    assert float(vm.ssh.run("cut -d' ' -f1 /proc/uptime").stdout) > 1.0


def test_two_restored_vms_are_independent(vm_factory):
    first = vm_factory.start(name="left")
    second = vm_factory.start(name="right")
    first.ssh.run("echo only-here > /root/marker")
    assert first.ssh.run("cat /root/marker").stdout == "only-here\n"
    assert second.ssh.run("test -e /root/marker", check=False).exit_status == 1
    assert (first.ssh.run("hostname").stdout.strip(), second.ssh.run("hostname").stdout.strip()) == ("left", "right")
    assert first.ssh_port != second.ssh_port
    # Their kernels' random generators were reseeded apart.
    a = first.ssh.run("head -c 16 /dev/urandom | od -An -tx1").stdout
    b = second.ssh.run("head -c 16 /dev/urandom | od -An -tx1").stdout
    assert a != b


def test_restored_clock_matches_the_host(vm):
    offset = measure_clock_offset(vm)
    assert abs(offset) < 1.0, f"guest clock is {offset:+.3f} s off the host's"


@pytest.mark.fresh_boot
def test_fresh_boot_marker_boots(vm):
    assert not vm.restored
    assert float(vm.ssh.run("cut -d' ' -f1 /proc/uptime").stdout) < 120
    # The serial console of a cold boot holds kernel messages (loglevel 5: warnings and
    # worse; the initrd logs its steps at warning level).
    assert "bh-initrd: switch_root" in vm.serial_log.read_text()


def test_restored_guest_keeps_swap_and_balloon(vm):
    assert "/swapfile" in vm.ssh.run("cat /proc/swaps").stdout
    vm.balloon.set_target(768)
    deadline = time.monotonic() + 60
    while vm.balloon.state().actual_mib > 784 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert vm.balloon.state().actual_mib <= 784


def test_restored_guests_share_the_saved_ram_image(vm_factory):
    """Two guests map one RAM image copy-on-write: most of what each has resident is file
    pages of that image, and their own (anonymous) memory is a fraction of it."""
    first, second = vm_factory.start(name="a"), vm_factory.start(name="b")
    assert first.ram_mode is RamMode.SHARED and second.ram_mode is RamMode.SHARED
    assert first.saved.ram_image == second.saved.ram_image
    for machine in (first, second):
        mapped = mapping_kib(machine.pid, first.saved.ram_image)
        # The guest's RAM is that file, mapped privately; what the guest has read of it is
        # resident as shared page cache, what it wrote is its own copy.
        assert mapped["Rss"] > 50 * 1024 and mapped["Shared_Clean"] > 0, mapped
    assert "balloon-harness: restored as a (shared RAM)" in first.serial_log.read_text()


def test_guest_writes_and_balloon_never_change_the_ram_image(vm_factory):
    """A restored guest dirties 256 MiB and the balloon takes it back: the host gets the
    guest's private copies back, and the saved RAM image stays byte for byte the same (QEMU
    would otherwise punch the balloon's pages out of the shared file)."""
    machine = vm_factory.start(name="writer")
    image = machine.saved.ram_image
    before_digest = file_digest(image)
    machine.ssh.run("python3 -c 'b = bytearray(256 << 20); b[::4096] = b\"x\" * (256 << 8)'")
    dirty = machine.process_memory()
    assert BalloonController(machine.balloon).resize(machine.spec.memory_mib - 320, timeout=machine.timeouts.command * 4).reached
    ballooned = machine.process_memory()
    assert ballooned.rss_anon_mib < dirty.rss_anon_mib - 100, (dirty, ballooned)
    assert file_digest(image) == before_digest
    assert machine.saved.ram_image_intact()
    # The guest still works on pages that came back from the image after the balloon.
    BalloonController(machine.balloon).resize(machine.spec.memory_mib, timeout=machine.timeouts.command * 4)
    assert machine.ssh.run("python3 -c 'print(sum(bytearray(64 << 20)))'").stdout == "0\n"


def test_streamed_restore_still_works(vm_factory):
    vm_factory.ram_mode = RamMode.STREAMED  # its own saved state, made the older way
    machine = vm_factory.start(name="streamed")
    assert machine.saved.state.exists() and not machine.saved.ram_image.exists()
    assert machine.ram_mode is RamMode.STREAMED
    memory = machine.process_memory()
    assert memory.rss_anon_mib > memory.rss_file_mib, memory  # the RAM was loaded, not mapped
    assert machine.ssh.run("hostname").stdout.strip() == "streamed"
