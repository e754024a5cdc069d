"""The plugin seen from outside: a child pytest runs VM tests and we check what it leaves."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from child import INNER, child_pytest

from harness.reaper import qemu_processes_under
from harness.waiting import wait_for

# Each test here runs a whole pytest session of its own (two with xdist): one at a time, on
# one worker, so that an outer `-n 2` never has more than three guests on the cores.
pytestmark = pytest.mark.xdist_group("child-pytest")


def test_two_vms_at_once_under_xdist(tmp_path):
    report = tmp_path / "report.jsonl"
    proc = child_pytest(["-n", "2", str(INNER / "inner_report.py")], tmp_path, {"BH_REPORT": str(report)})
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    records = [json.loads(line) for line in report.read_text().splitlines()]
    assert len(records) == 2
    assert {r["worker"] for r in records} == {"gw0", "gw1"}, "both workers booted a VM"
    assert len({r["port"] for r in records}) == 2
    assert len({r["instance"] for r in records}) == 2
    assert len({r["run"] for r in records}) == 2
    for record in records:  # each run cleaned up after itself
        assert not Path(record["run"]).exists()


def test_xdist_workers_share_one_saved_state(tmp_path, vm_image):
    """Two workers start at once with no saved state yet: one boots and saves it under the
    cache lock, the other waits for it; both restore, and exactly one state exists."""
    cache = tmp_path / "cache"
    (cache / "snapshots").mkdir(parents=True)
    for name in ("images", "keys"):  # reuse the built image and key, not the saved states
        (cache / name).symlink_to(vm_image.disk.parents[1].parent / name)
    report = tmp_path / "report.jsonl"
    proc = child_pytest(["-n", "2", str(INNER / "inner_report.py")], tmp_path,
                        {"BH_REPORT": str(report), "BALLOON_HARNESS_CACHE": str(cache)})
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    records = [json.loads(line) for line in report.read_text().splitlines()]
    assert {r["worker"] for r in records} == {"gw0", "gw1"}
    assert all(r["restored"] for r in records), records
    states = [p for p in (cache / "snapshots").iterdir() if not p.name.startswith(".")]
    assert len(states) == 1 and (states[0] / "meta.json").exists()
    assert (states[0] / "devices.bin").exists() and (states[0] / "ram.img").exists()  # the shared-RAM state
    assert not [p for p in (cache / "snapshots").iterdir() if p.name.startswith(".")], "no half-written state left"


def test_failed_test_leaves_artifacts_and_no_process(tmp_path):
    artifacts = tmp_path / "art"
    proc = child_pytest([str(INNER / "inner_fail.py"), f"--vm-artifacts={artifacts}"], tmp_path)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1 and "deliberate failure" in out, out
    (test_dir,) = artifacts.iterdir()
    (vm_dir,) = test_dir.iterdir()
    assert vm_dir.name == "vm"  # the guest's name, not its runtime folder's (vm-1)
    names = {p.name for p in vm_dir.iterdir()}
    assert {"serial.log", "cmdline.txt", "qmp.jsonl", "dmesg.txt", "journal.txt"} <= names
    assert "evidence-from-the-guest" in (vm_dir / "dmesg.txt").read_text()
    # The serial console of the (restored) guest holds kernel messages: the restore's own mark
    # and what the test wrote to the kernel log.
    serial = (vm_dir / "serial.log").read_text(errors="replace")
    assert "balloon-harness: restored as" in serial and "evidence-from-the-guest" in serial, serial[-2000:]
    assert "qemu-system-x86_64" in (vm_dir / "cmdline.txt").read_text()
    assert '"qmp_capabilities"' in (vm_dir / "qmp.jsonl").read_text()
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout
    assert leftovers == ""


def test_passing_test_keeps_no_artifacts_unless_asked(tmp_path):
    artifacts = tmp_path / "art"
    report = tmp_path / "r.jsonl"
    proc = child_pytest([str(INNER / "inner_report.py"), "-k", "1", f"--vm-artifacts={artifacts}"],
                        tmp_path, {"BH_REPORT": str(report)})
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert not artifacts.exists()
    proc = child_pytest([str(INNER / "inner_report.py"), "-k", "1", f"--vm-artifacts={artifacts}",
                         "--vm-keep"], tmp_path, {"BH_REPORT": str(report)})
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert list(artifacts.rglob("serial.log"))


def test_kill_9_of_pytest_then_reap_leaves_nothing(tmp_path):
    ready = tmp_path / "ready"
    proc = child_pytest([str(INNER / "inner_hang.py")], tmp_path, {"BH_READY": str(ready)})
    try:
        wait_for(lambda: ready.exists() and len(ready.read_text().split()) == 2, timeout=600,
                 what="the child pytest to boot its VM", abort=lambda: proc.poll() and "child exited")
    except BaseException:
        proc.kill()
        raise
    run_path, qemu_pid = ready.read_text().split()
    run_path, qemu_pid = Path(run_path), int(qemu_pid)
    assert qemu_processes_under(run_path) == [qemu_pid]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # QEMU dies with its parent (PR_SET_PDEATHSIG): no reaper needed for the process itself.
    wait_for(lambda: not qemu_processes_under(run_path), timeout=30,
             what="QEMU to die with the SIGKILLed pytest")
    assert run_path.exists(), "files of the killed run are left for the reaper"
    reap = subprocess.run([sys.executable, "-m", "harness.cli", "reap", "--no-libvirt"],
                          capture_output=True, text=True, timeout=60)
    assert reap.returncode == 0, reap.stdout + reap.stderr
    assert run_path.name in reap.stdout
    # The evidence stays, marked killed; disks, seeds and sockets go.
    assert json.loads((run_path / "killed.json").read_text())["why"]
    assert list(run_path.rglob("serial.log")) and list(run_path.rglob("qmp.jsonl"))
    assert not [p for p in run_path.rglob("*") if p.suffix in (".qcow2", ".iso") or p.is_socket()]
    purge = subprocess.run([sys.executable, "-m", "harness.cli", "reap", "--no-libvirt", "--purge"],
                           capture_output=True, text=True, timeout=60)
    assert purge.returncode == 0, purge.stdout + purge.stderr
    assert not run_path.exists()


def test_session_end_check_fails_the_run_and_kills_a_leaked_qemu(tmp_path):
    """A test passes but leaves its QEMU running: the session fails, naming it, and the QEMU
    is killed by the check itself, before the process exits (when it would die anyway)."""
    leak = tmp_path / "leak"
    proc = child_pytest(["-p", "leak_watch", str(INNER / "inner_leak.py")], tmp_path,
                        {"BH_LEAK": str(leak), "PYTHONPATH": os.pathsep.join(filter(None, [
                            str(INNER), os.environ.get("PYTHONPATH")]))})
    out, _ = proc.communicate(timeout=600)
    assert "1 passed" in out, out
    assert proc.returncode == pytest.ExitCode.TESTS_FAILED, out
    pid = int(leak.read_text())
    assert f"1 QEMU process(es) leaked by this run: [{pid}]; killing" in out, out
    assert (tmp_path / "leak.at-exit").read_text() == "dead", "the check did not kill the leaked QEMU"


def test_shared_vm_is_one_guest_for_the_session_and_keeps_its_evidence(tmp_path):
    """Two tests see the same `shared_vm` (one QEMU, one boot); it stops when the session
    ends, and since a test failed, its evidence is kept under session-shared_vm-*."""
    report, artifacts = tmp_path / "report.jsonl", tmp_path / "art"
    proc = child_pytest([str(INNER / "inner_shared.py"), f"--vm-artifacts={artifacts}"], tmp_path,
                        {"BH_REPORT": str(report)})
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1 and "1 failed, 2 passed" in out and "deliberate failure" in out, out
    first, second = (json.loads(line) for line in report.read_text().splitlines())
    assert (first["test"], second["test"]) == ("first", "second")
    for key in ("pid", "instance", "boot_id", "vm_dir"):
        assert first[key] == second[key], key
    assert not Path(first["vm_dir"]).exists(), "the shared guest's files outlived its session"
    (folder,) = artifacts.iterdir()
    assert folder.name.startswith("session-shared_vm-")
    (vm_dir,) = folder.iterdir()
    assert vm_dir.name == "shared"  # the guest's name, not its runtime folder's (shared-1)
    assert "shared-guest-evidence" in (vm_dir / "dmesg.txt").read_text()
    assert {"serial.log", "cmdline.txt", "qmp.jsonl"} <= {p.name for p in vm_dir.iterdir()}
