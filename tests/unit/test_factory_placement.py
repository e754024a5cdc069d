"""A machine's placement (a scenario's budget cgroup) and RAM mode are given per start: the
factory a test session shares is never changed under other users of it, and guests created
from several threads at once (a scenario starts its guests in parallel) get distinct names."""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from harness.accel import Accel
from harness.config import VMSpec
from harness.host.placement import Placement
from harness.image.guest_image import GuestImage, ImageKind
from harness.machine import factory as factory_module
from harness.machine.sharedram import RamMode
from harness.runtime import Run


@pytest.fixture
def factory(monkeypatch):
    folder = Path(tempfile.mkdtemp(prefix="bh-f-"))  # short: the VM folders' sockets must fit
    image = GuestImage(kind=ImageKind.BUILT, disk=folder / "d.qcow2", disk_format="qcow2", identity="img",
                       kernel=folder / "k", initrd=folder / "i", lean_cmdline=("bh.lean",))
    monkeypatch.setattr(factory_module, "bundle_digest", lambda: "code")
    yield factory_module.MachineFactory(image, Accel.TCG, key=None, run=Run("r1", folder),
                                        ram_mode=RamMode.SHARED)
    shutil.rmtree(folder, ignore_errors=True)


def test_a_placement_given_for_one_machine_is_that_machines_only(factory, tmp_path):
    budget = Placement(cgroup_procs=tmp_path / "cgroup.procs", evidence_dir=tmp_path, tcg_tb_mib=64)
    placed = factory.create(VMSpec(name="web"), placement=budget)
    plain = factory.create(VMSpec(name="batch"))
    assert placed.placement is budget
    assert plain.placement is None and factory.placement is None


def test_the_ram_mode_keys_the_saved_state_without_changing_the_factory(factory):
    spec = VMSpec()
    assert factory.state_key(spec, RamMode.STREAMED) != factory.state_key(spec)
    assert factory.state_key(spec, RamMode.SHARED) == factory.state_key(spec)
    assert factory.ram_mode is RamMode.SHARED


def test_machines_created_from_many_threads_at_once_get_distinct_names_and_folders(factory):
    barrier = threading.Barrier(8)
    made = []

    def create():
        barrier.wait()
        made.append(factory.create(VMSpec(name="guest")))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({m.name for m in made}) == 8 and len({m.vm_dir for m in made}) == 8
    assert len(factory.machines) == 8
