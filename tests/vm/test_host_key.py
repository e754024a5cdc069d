"""Each guest presents the SSH host key the harness gave it, and the harness accepts no
other: the lean boot installs it from the seed in the initrd, cloud-init from `ssh_keys`,
and a restored guest keeps its saved state's (recorded next to the state)."""

import pytest

from harness.config import BootPath
from harness.image.sshkey import HostKey
from harness.ssh import GuestShell, HostKeyMismatch


def guest_host_key(vm) -> list[str]:
    return vm.ssh.run("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2]


def test_lean_boot_presents_its_seeded_key_and_a_wrong_expectation_is_refused(vm_factory):
    vm = vm_factory.start(fresh=True, settle=False)
    assert guest_host_key(vm) == vm.host_key.public_line.split()[:2]
    impostor_check = GuestShell(vm.name, "127.0.0.1", vm.ssh_port, vm.image.ssh_user, vm.key,
                                HostKey.generate().public_line, 10)
    with pytest.raises(HostKeyMismatch):
        impostor_check.try_connect(10)


def test_cloud_init_boot_presents_its_seeded_key(vm_factory):
    vm = vm_factory.start(name="ci-key", boot_path=BootPath.CLOUD_INIT, settle=False)
    assert guest_host_key(vm) == vm.host_key.public_line.split()[:2]


def test_restored_guest_presents_its_saved_states_key(vm_factory, request):
    if request.config.getoption("--vm-fresh-boot"):
        pytest.skip("the whole session boots fresh (--vm-fresh-boot)")
    a = vm_factory.start(name="a", settle=False)
    b = vm_factory.start(name="b", settle=False)
    assert a.restored and b.restored
    assert a.known_host_key == b.known_host_key == a.saved.host_key
    assert guest_host_key(a) == a.known_host_key.split()[:2]
