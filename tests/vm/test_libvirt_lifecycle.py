"""libvirt leftovers: killed runs leave no harness domain, and foreign domains are untouched."""

import dataclasses
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from harness.machine.libvirt import connect, harness_domains, harness_metadata
from harness.runtime import Owner
from harness.waiting import wait_for

INNER = Path(__file__).parent / "inner"

FOREIGN_XML = """<domain type='qemu'>
  <name>{name}</name><uuid>{uuid}</uuid>
  {metadata}
  <memory unit='MiB'>64</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
</domain>"""


@pytest.fixture
def conn():
    return connect(None)  # this process's shared connection


@pytest.fixture
def foreign_domains(conn):
    """Two defined (not running) domains the harness did not create: one with an unrelated
    name, one whose name even starts with the harness prefix but has no harness metadata."""
    names = [f"not-ours-{uuid.uuid4().hex[:6]}", f"bh-lookalike-{uuid.uuid4().hex[:6]}"]
    domains = [conn.defineXML(FOREIGN_XML.format(name=n, uuid=uuid.uuid4(), metadata="")) for n in names]
    yield names
    for dom in domains:
        dom.undefine()


def names_on(conn):
    return {d.name() for d in conn.listAllDomains()}


def harness_domain_xml(run_id: str, owner: Owner) -> str:
    return FOREIGN_XML.format(name=f"bh-{run_id}-vm-1", uuid=uuid.uuid4(),
                              metadata=f"<metadata>{harness_metadata(run_id, 'vm', owner)}</metadata>")


def test_leftover_domain_of_a_dead_run_is_reaped_and_foreign_ones_are_not(conn, foreign_domains, tmp_path):
    # A harness domain whose owner is gone, started WITHOUT autodestroy (what a libvirtd
    # restart or a crashed connection could leave): a tiny diskless guest is enough. Next to
    # it, one whose owner (this process) lives but uses another runtime folder, as another
    # CI job would: not this reaper's to remove.
    gone = subprocess.Popen(["true"])
    gone.wait()
    here = Owner.current()
    dead_owner = dataclasses.replace(here, pid=gone.pid, start_time=1)
    other_job = dataclasses.replace(here, runtime=str(tmp_path / "another-job"))
    leftover = conn.createXML(harness_domain_xml("999999dead", dead_owner), 0).name()
    live = conn.createXML(harness_domain_xml("999999otherjob", other_job), 0)
    try:
        assert {leftover, live.name()} <= {d.domain.name() for d in harness_domains(conn)}
        reap = subprocess.run([sys.executable, "-m", "harness.cli", "reap"], capture_output=True, text=True, timeout=120)
        assert reap.returncode == 0, reap.stdout + reap.stderr
        assert leftover in reap.stdout
        remaining = names_on(conn)
        assert leftover not in remaining
        assert live.name() in remaining, "another job's live domain was removed"
        assert set(foreign_domains) <= remaining
    finally:
        live.destroy()


def test_kill_9_of_pytest_leaves_no_domain(conn, foreign_domains, tmp_path):
    ready = tmp_path / "ready"
    env = {**os.environ, "BH_READY": str(ready)}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--rootdir={tmp_path}",
                             "--vm-backend=libvirt", str(INNER / "inner_hang.py")],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: ready.exists() and len(ready.read_text().split()) == 2, timeout=600,
                 what="the child pytest to boot its libvirt VM", abort=lambda: proc.poll() and "child exited")
    except BaseException:
        proc.kill()
        raise
    run_path = Path(ready.read_text().split()[0])
    run_id = run_path.name
    assert any(d.run_id == run_id for d in harness_domains(conn))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # AUTODESTROY: libvirtd destroys the domain once the killed process's connection drops.
    wait_for(lambda: not any(d.run_id == run_id for d in harness_domains(conn)), timeout=60,
             what="libvirtd to destroy the killed run's domain")
    reap = subprocess.run([sys.executable, "-m", "harness.cli", "reap", "--purge"], capture_output=True,
                          text=True, timeout=120)
    assert reap.returncode == 0
    assert not run_path.exists()
    assert not any(name.startswith(f"bh-{run_id}") for name in names_on(conn))
    assert set(foreign_domains) <= names_on(conn)
