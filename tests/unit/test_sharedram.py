"""The pieces of shared guest RAM that need no VM: the seccomp guard that keeps QEMU from
punching holes into a shared RAM image (run for real in a forked child), the saved state's
integrity check, and the host-cost readings."""

import os
import platform

import pytest

from harness.hostcost import cpu_seconds, group_memory
from harness.machine.base import ProcessMemory
from harness.machine.sharedram import DiscardGuard, memory_backend
from harness.machine.snapshot import META, RAM_IMAGE, SavedState

needs_x86_64 = pytest.mark.skipif(platform.machine() != "x86_64", reason="the guard is an x86-64 program")
PAGE = 4096


def punch_in_child(path, offset, length, guard: bool) -> int:
    """fallocate(PUNCH_HOLE|KEEP_SIZE) from a forked child, with or without the guard;
    returns the child's exit status (0: the call returned 0)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            if guard:
                DiscardGuard().install()
            fd = os.open(path, os.O_RDWR)
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
            code = 0 if libc.fallocate(fd, 3, offset, length) == 0 else 2
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@needs_x86_64
@pytest.mark.parametrize("length", [PAGE, 2 << 20, 4 << 20])
def test_guard_turns_balloon_and_report_punches_into_no_ops(tmp_path, length):
    image = tmp_path / "ram.img"
    data = os.urandom(8 << 20)
    image.write_bytes(data)
    assert punch_in_child(image, 0, length, guard=True) == 0  # QEMU sees success...
    assert image.read_bytes() == data                         # ...and the file is whole


@needs_x86_64
def test_without_the_guard_a_punch_zeroes_the_file(tmp_path):
    image = tmp_path / "ram.img"
    image.write_bytes(os.urandom(1 << 20))
    assert punch_in_child(image, 0, PAGE, guard=False) == 0
    assert image.read_bytes()[:PAGE] == bytes(PAGE)


@needs_x86_64
def test_guard_lets_other_punches_through(tmp_path):
    # A disk-sized punch (64 KiB cluster) is not the balloon's: it runs as usual.
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(1 << 20))
    assert punch_in_child(image, 0, 64 << 10, guard=True) == 0
    assert image.read_bytes()[:64 << 10] == bytes(64 << 10)


def test_memory_backend_is_private_over_the_image_for_restored_guests(tmp_path):
    assert memory_backend(1024) == ["-object", "memory-backend-ram,id=ram0,size=1024M"]
    restored = memory_backend(512, tmp_path / "ram.img")[1]
    assert "memory-backend-file" in restored and "share=off" in restored and "size=512M" in restored
    assert "share=on" in memory_backend(512, tmp_path / "ram.img", private=False)[1]


def test_changed_ram_image_is_detected(tmp_path):
    (tmp_path / RAM_IMAGE).write_bytes(bytes(PAGE))
    st = (tmp_path / RAM_IMAGE).stat()
    (tmp_path / META).write_text(f'{{"ram_image": [{st.st_size}, {st.st_mtime_ns}]}}')
    saved = SavedState(tmp_path)
    assert saved.ram_image_intact()
    os.utime(tmp_path / RAM_IMAGE, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # as a write would
    assert not saved.ram_image_intact()


def test_cpu_seconds_reads_past_a_command_name_with_spaces(tmp_path):
    (tmp_path / "42").mkdir()
    rest = " ".join(["S"] + ["0"] * 10 + ["250", "150"] + ["0"] * 30)
    (tmp_path / "42" / "stat").write_text(f"42 (qemu (x) 1) {rest}\n")
    assert cpu_seconds(42, tmp_path) == pytest.approx(400 / os.sysconf("SC_CLK_TCK"))
    assert cpu_seconds(43, tmp_path) is None


def test_group_memory_counts_shared_pages_once_through_pss():
    # Two guests each map 200 MiB of one shared file and own 50 MiB: PSS gives each 100 + 50.
    guest = ProcessMemory(rss_mib=250, rss_anon_mib=50, rss_file_mib=200, rss_shmem_mib=0, swap_mib=0,
                          pss_mib=150, pss_anon_mib=50, pss_file_mib=100)
    group = group_memory([guest, guest])
    assert (group.total_mib, group.rss_sum_mib, group.private_mib) == (300, 500, 100)


def test_guest_code_keys_the_saved_state_not_the_image(tmp_path, monkeypatch):
    """A daemon edit costs a new saved state, not an image build."""
    from harness.accel import Accel
    from harness.config import VMSpec
    from harness.image.guest_image import GuestImage, ImageKind
    from harness.image.recipe import Recipe
    from harness.machine import factory as factory_module
    from harness.resources import guest_code_files

    guest_sources = {src.resolve() for src, _ in guest_code_files()}
    assert not guest_sources & {path.resolve() for _, path in Recipe.named().input_files()}
    image = GuestImage(kind=ImageKind.BUILT, disk=tmp_path / "d.qcow2", disk_format="qcow2", identity="img",
                       kernel=tmp_path / "k", initrd=tmp_path / "i", lean_cmdline=("bh.lean",))
    factory = factory_module.MachineFactory(image, Accel.TCG, key=None, run=None)
    spec = VMSpec()
    monkeypatch.setattr(factory_module, "bundle_digest", lambda: "code-v1")
    first = factory.state_key(spec)
    assert factory.state_key(spec) == first
    monkeypatch.setattr(factory_module, "bundle_digest", lambda: "code-v2")
    assert factory.state_key(spec) != first
    assert factory.state_key(spec.with_(memory_mib=768)) != factory.state_key(spec)
