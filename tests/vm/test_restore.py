"""Boot once, restore many: restored guests are independent, have their own name and the
host's time, and a test can still ask for a real boot."""

import time

import pytest

from harness.ledger import measure_clock_offset


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


def test_restored_guest_keeps_swap_and_balloon(vm):
    assert "/swapfile" in vm.ssh.run("cat /proc/swaps").stdout
    vm.balloon.set_target(768)
    deadline = time.monotonic() + 60
    while vm.balloon.state().actual_mib > 784 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert vm.balloon.state().actual_mib <= 784
