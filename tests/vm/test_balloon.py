"""The balloon driven from the host, checked from inside the guest (as QEMU's own
balloon tests do: MemTotal must agree with the balloon's `actual` within 100 MiB)."""

import pytest

from harness.balloon import BalloonController
from harness.errors import ConfigError

TOLERANCE_MIB = 100

pytestmark = pytest.mark.parametrize("vm_backend", ["qemu", "libvirt"])


def guest_memtotal_mib(vm) -> float:
    return int(vm.ssh.run("awk '/MemTotal/ {print $2}' /proc/meminfo").stdout) / 1024


def test_shrink_and_grow_agree_with_memtotal(vm):
    balloon = BalloonController(vm.balloon)
    full_total = guest_memtotal_mib(vm)
    # MemTotal is smaller than the VM's RAM by what the kernel reserves; measure that gap
    # once at full size and expect it to stay put while the balloon moves.
    reserved = vm.spec.memory_mib - full_total
    for target in (640, 512, 900, vm.spec.memory_mib):
        result = balloon.resize(target, timeout=vm.timeouts.command)
        assert result.reached, result.describe()
        actual = vm.balloon.state().actual_mib
        total = guest_memtotal_mib(vm)
        assert abs((total + reserved) - actual) <= TOLERANCE_MIB, \
            f"target {target}: guest MemTotal {total:.0f} (+{reserved:.0f} reserved) vs actual {actual:.0f}"


def test_guest_stats_are_reported(vm):
    stats = vm.balloon.guest_stats()
    assert stats.total_mib == pytest.approx(guest_memtotal_mib(vm), abs=TOLERANCE_MIB)
    assert stats.available_mib is not None and 0 < stats.available_mib < stats.total_mib


def test_ramp_moves_the_target_in_steps(vm):
    balloon = BalloonController(vm.balloon)
    seen = []
    original = vm.balloon.set_target
    vm.balloon.set_target = lambda mib: (seen.append(mib), original(mib))  # record, then really set
    try:
        balloon.ramp(vm.spec.memory_mib, 704, over_s=2, steps=4)
    finally:
        vm.balloon.set_target = original
    assert seen == [944.0, 864.0, 784.0, 704.0]
    assert balloon.wait_until(704, timeout=vm.timeouts.command).reached


@pytest.mark.parametrize("target,needle", [(4096, "above the VM's memory"), (64, "below the floor")])
def test_impossible_targets_are_clear_errors(vm, target, needle):
    with pytest.raises(ConfigError, match=needle):
        BalloonController(vm.balloon).set_target(target)


def test_wait_reports_how_far_it_got(vm):
    """A target the guest cannot reach whatever its speed: its balloon driver is unloaded, so
    nothing in the guest acts on the request. The wait runs out and reports where the
    balloon is, not where it was asked to go."""
    vm.ssh.run("modprobe -r virtio_balloon && ! grep -q '^virtio_balloon ' /proc/modules")
    balloon = BalloonController(vm.balloon)
    balloon.set_target(300)
    result = balloon.wait_until(300, timeout=1.0)
    assert not result.reached and result.seconds >= 1.0
    assert result.actual_mib == pytest.approx(vm.spec.memory_mib, abs=1) == vm.balloon.state().actual_mib
    assert f"balloon did not reach 300 MiB after {result.seconds:.1f} s (actual {vm.spec.memory_mib} MiB)" \
        == result.describe()
