"""Booting a real guest, commands and files over SSH, evidence when a boot fails."""

import time

import pytest

from harness.config import BootPath, Timeouts
from harness.errors import WaitTimeout
from harness.reaper import qemu_processes_under

pytestmark = pytest.mark.parametrize("vm_backend", ["qemu", "libvirt"])


def test_boot_and_run_a_command(vm):
    result = vm.ssh.run("hostname; uname -r; systemctl is-system-running; cat /proc/swaps | wc -l")
    hostname, kernel, state, swap_lines = result.stdout.split()
    assert hostname == vm.name
    assert "cloud-amd64" in kernel
    assert int(swap_lines) == 2  # header + the swap file the VM description asked for
    assert state in ("running", "degraded")
    assert result.exit_status == 0


def test_command_exit_status_and_stderr(vm):
    result = vm.ssh.run("echo out; echo err >&2; exit 3", check=False)
    assert (result.stdout, result.stderr, result.exit_status) == ("out\n", "err\n", 3)


def test_command_timeout_is_reported(vm):
    from harness.errors import GuestCommandError
    with pytest.raises(GuestCommandError, match="timed out"):
        vm.ssh.run("sleep 30", timeout=2)
    assert vm.ssh.run("echo still-usable").stdout == "still-usable\n"


def test_put_and_get_a_file(vm, tmp_path):
    local = tmp_path / "payload.bin"
    local.write_bytes(bytes(range(256)) * 1000)
    vm.ssh.put(local, "/root/payload.bin")
    assert vm.ssh.run("sha256sum /root/payload.bin").stdout.split()[0] == \
        __import__("hashlib").sha256(local.read_bytes()).hexdigest()
    vm.ssh.run("echo from-guest > /root/back.txt")
    vm.ssh.get("/root/back.txt", tmp_path / "back.txt")
    assert (tmp_path / "back.txt").read_text() == "from-guest\n"


def test_base_image_is_never_written(vm, vm_image):
    before = vm_image.disk.stat().st_mtime_ns
    vm.ssh.run("dd if=/dev/zero of=/root/blob bs=1M count=20 && sync")
    assert vm_image.disk.stat().st_mtime_ns == before


def test_balloon_query_and_qmp_traffic(vm, vm_backend):
    state = vm.balloon.state()
    assert state.actual_mib == pytest.approx(vm.spec.memory_mib)
    assert vm.host_rss_mib() > 50
    if vm_backend == "qemu":  # libvirt keeps the monitor to itself
        log = (vm.vm_dir / "qmp.jsonl").read_text()
        assert '"query-balloon"' in log and '"info usernet"' in log


def test_guest_that_never_boots_times_out_with_serial_tail(vm_factory):
    # The initrd waits 10 s for a root disk that does not exist, then gives up (and the
    # kernel panics, which ends QEMU: the wait stops early, with the evidence).
    machine = vm_factory.create(name="noboot", extra_kernel_args=("root=/dev/vdz",),
                                timeouts=Timeouts(boot=45, command=10, shutdown=5, qmp=20))
    with pytest.raises(WaitTimeout) as info:
        machine.start()
    message = str(info.value)
    assert "noboot to answer SSH" in message
    assert "bh-initrd: cannot mount the root disk /dev/vdz" in message  # the serial tail
    assert "qemu-system-x86_64" in message and "root=/dev/vdz" in message  # the command line
    assert not qemu_processes_under(machine.vm_dir)  # and it was killed


def test_cloud_init_path_applies_the_seed(vm_factory):
    """The slow, standard path: cloud-init (not the lean initrd) installs key and hostname."""
    started = time.monotonic()
    machine = vm_factory.start(name="ci-path", boot_path=BootPath.CLOUD_INIT)
    assert machine.uses_cloud_init
    out = machine.ssh.run("hostname; cloud-init status; cat /proc/cmdline").stdout
    assert out.startswith("ci-path\nstatus: done")
    assert "bh.lean" not in out
    print(f"cloud-init boot to ready: {time.monotonic() - started:.1f} s")
