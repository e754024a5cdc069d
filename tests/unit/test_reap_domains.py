"""`reap` removes a libvirt domain only when the harness process that owns it is dead, here:
never a domain of a live run elsewhere (another user, another CI job with its own runtime
folder, another host behind the same libvirtd), nor one it cannot judge.

libvirt's own `test:///default` driver (real libvirt: real domains, metadata, destroy and
undefine, in this process) stands in for libvirtd, so that no domain of anyone using the
machine's libvirtd can be touched by these tests, even by a broken reaper. The owners are
real processes (this one alive, an exited one dead).
"""

import os
import subprocess
import uuid

import pytest

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is part of the dev install (make venv)")

import harness.machine.libvirt as bh_libvirt  # noqa: E402
from harness.accel import Accel  # noqa: E402
from harness.config import VMSpec  # noqa: E402
from harness.image.guest_image import GuestImage, ImageKind  # noqa: E402
from harness.machine.libvirt import METADATA_KEY, METADATA_NS, domain_xml  # noqa: E402
from harness.machine.qemu import VmFiles  # noqa: E402
from harness.reaper import reap  # noqa: E402
from harness.runtime import Owner, process_start_time, runtime_root  # noqa: E402

XML = """<domain type='test'><name>{name}</name><uuid>{uuid}</uuid><memory unit='MiB'>64</memory>
<metadata><{k}:harness xmlns:{k}='{ns}'><run>{run}</run><vm>vm</vm>{owner}</{k}:harness></metadata>
<os><type arch='x86_64'>hvm</type></os></domain>"""


@pytest.fixture
def conn(monkeypatch, tmp_path):
    """The test driver as the harness's libvirt, a private runtime folder as ours."""
    monkeypatch.setenv("BALLOON_HARNESS_RUNTIME", str(tmp_path / "runtime"))
    test_conn = libvirt.open("test:///default")
    monkeypatch.setattr(bh_libvirt, "connect", lambda _uri: test_conn)
    before = {d.name() for d in test_conn.listAllDomains()}
    yield test_conn
    for dom in test_conn.listAllDomains():  # the driver's state lives as long as this process
        if dom.name() not in before:
            persistent = dom.isPersistent()  # a transient domain is gone once destroyed
            if dom.isActive():
                dom.destroy()
            if persistent:
                dom.undefine()


def dead_pid() -> int:
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


def owner_xml(pid: int, start_time: int | None = 1, **override) -> str:
    fields = {"pid": pid, "start_time": start_time, "boot_id": Owner.current().boot_id,
              "host": os.uname().nodename, "uid": os.geteuid(), "runtime": str(runtime_root()),
              **override}
    return "<owner " + " ".join(f"{k}='{v}'" for k, v in fields.items()) + "/>"


def make_domain(conn, run: str, owner: str = "", persistent: bool = False) -> str:
    name = f"bh-{run}-vm-1"
    xml = XML.format(name=name, uuid=uuid.uuid4(), k=METADATA_KEY, ns=METADATA_NS, run=run, owner=owner)
    if persistent:
        conn.defineXML(xml).create()
    else:
        conn.createXML(xml, 0)
    return name


def names(conn) -> set[str]:
    return {d.name() for d in conn.listAllDomains()}


def test_only_domains_whose_owner_is_dead_here_are_removed(conn):
    me = os.getpid()
    dead = make_domain(conn, "1dead", owner_xml(dead_pid()), persistent=True)
    kept = {
        make_domain(conn, "2alive", owner_xml(me, process_start_time(me), runtime="/tmp/another-job")),
        make_domain(conn, "3alivehere", owner_xml(me, process_start_time(me))),
        make_domain(conn, "4otherhost", owner_xml(dead_pid(), boot_id=str(uuid.uuid4()), host="elsewhere")),
        make_domain(conn, "5otherjob", owner_xml(dead_pid(), runtime="/tmp/another-job")),
        make_domain(conn, "6otheruser", owner_xml(dead_pid(), uid=65534)),
    }
    report = reap()
    assert kept <= names(conn), f"a domain that is not ours to judge was removed: {kept - names(conn)}"
    assert dead not in names(conn), "the dead owner's domain (persistent, running) is left"
    assert report.destroyed_domains == [dead]


def test_domain_without_owner_record_is_removed_only_for_a_dead_run_of_ours(conn):
    """Decided: a domain with no owner record (made by an older harness) is removed only when
    its run id names a run folder here whose owner is dead; otherwise it is left and listed."""
    runs = runtime_root() / "runs"
    runs.mkdir(mode=0o700)
    (runs / "7deadhere").mkdir(mode=0o700)
    (runs / "7deadhere" / "owner.json").write_text(f'{{"pid": {dead_pid()}, "start_time": 1}}')
    ours = make_domain(conn, "7deadhere")
    unknown = make_domain(conn, "8unknown")
    report = reap()
    assert unknown in names(conn), "a domain nobody can vouch for was removed"
    assert ours not in names(conn)
    assert any(name == unknown and "no owner record" in why for name, why in report.kept_domains)


def test_harness_domains_carry_their_owner(tmp_path, monkeypatch):
    """The domain XML the harness starts names this process, its start time, this boot and
    this runtime folder: what the reaper of any other process judges by."""
    monkeypatch.setenv("BALLOON_HARNESS_RUNTIME", str(tmp_path / "runtime"))
    image = GuestImage(ImageKind.CLOUD, tmp_path / "disk.qcow2", "qcow2", "id")
    xml = domain_xml("bh-42abcd-vm-1", VMSpec(), image, Accel.TCG, VmFiles(tmp_path), "42abcd")
    record = Owner.from_xml(xml)
    assert record == Owner.current()
    assert record.pid == os.getpid() and record.start_time == process_start_time(os.getpid())
    assert record.runtime == str(runtime_root()) and record.uid == os.geteuid()
