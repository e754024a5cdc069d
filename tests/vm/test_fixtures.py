"""The `balloon` fixture drives this test's `vm` (the `shared_vm` fixture is seen from a whole
session in test_plugin_lifecycle.py)."""

from harness.balloon import BalloonController


def memtotal_mib(vm) -> float:
    return int(vm.ssh.run("awk '/MemTotal/ {print $2}' /proc/meminfo").stdout) / 1024


def test_balloon_fixture_is_the_vm_s_balloon(vm, balloon):
    assert isinstance(balloon, BalloonController) and balloon.balloon is vm.balloon
    before = memtotal_mib(vm)
    result = balloon.resize(vm.spec.memory_mib - 256, timeout=vm.timeouts.command)
    assert result.reached, result.describe()
    assert vm.balloon.state().actual_mib == result.actual_mib
    # The guest this test holds gave the memory: its MemTotal fell by what the balloon took.
    assert abs((before - memtotal_mib(vm)) - 256) <= 32
