"""`reap` keeps a killed run's evidence: it stops what the run left running and removes what
is bulky or dangerous to keep (overlays, seeds, sockets), marks the folder killed (when and
why), and keeps the serial log, QMP traffic, command line and QEMU output. Old evidence goes
after KEEP_DAYS, or at once with `reap --purge` (what `make clean` runs).

Real files: a qcow2 overlay made by qemu-img, a bound unix socket, a real process standing
in for QEMU."""

import json
import os
import socket
import subprocess
import sys
import time

from test_cache_and_reaper import fake_run, qemu_standin

from harness.reaper import KILLED_MARK, reap

EVIDENCE = {"serial.log": "[    0.000000] Linux version 6.1\n", "qmp.jsonl": '{"dir": "out"}\n',
            "cmdline.txt": "qemu-system-x86_64 -m 1024M\n", "qemu.log": "qemu: terminating\n",
            "seed-user-data.txt": "#cloud-config\n", "qemu.pid": "4242\n"}


def dead_run_with_files(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    run = fake_run(tmp_path, gone.pid, 1)
    vm = run.path / "vms" / "vm-1"
    for name, text in EVIDENCE.items():
        (vm / name).write_text(text)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(vm / "overlay.qcow2"), "64M"], check=True)
    (vm / "seed.iso").write_bytes(b"\0" * 4096)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(vm / "qmp.sock"))
    sock.close()
    return run, vm


def test_killed_run_keeps_its_evidence_and_loses_its_disks_and_sockets(tmp_path, monkeypatch):
    monkeypatch.setenv("BALLOON_HARNESS_RUNTIME", str(tmp_path))
    run, vm = dead_run_with_files(tmp_path)
    qemu = qemu_standin(f"socket,id=qmp,path={vm}/qmp.sock")
    try:
        before = time.time()
        report = reap(include_libvirt=False)
        assert qemu.wait(timeout=10) == -9, "the killed run's QEMU is still running"
    finally:
        qemu.kill()
        qemu.wait()
    assert report.killed_pids == [qemu.pid]
    assert run.run_id in report.kept_evidence and run.run_id not in report.removed_runs
    left = {p.name for p in vm.iterdir()}
    assert left == set(EVIDENCE), f"expected exactly the evidence to be left, got {sorted(left)}"
    assert all((vm / n).read_text() == text for n, text in EVIDENCE.items())
    mark = json.loads((run.path / KILLED_MARK).read_text())
    assert before <= mark["reaped_at"] <= time.time()
    assert str(run.owner()["pid"]) in mark["why"] and "gone" in mark["why"]
    assert mark["killed_pids"] == [qemu.pid]
    assert sorted(mark["removed"]) == ["vms/vm-1/overlay.qcow2", "vms/vm-1/qmp.sock", "vms/vm-1/seed.iso"]


def test_a_second_reap_keeps_the_mark_and_purge_removes_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("BALLOON_HARNESS_RUNTIME", str(tmp_path))
    run, _vm = dead_run_with_files(tmp_path)
    reap(include_libvirt=False)
    first = (run.path / KILLED_MARK).read_text()
    again = reap(include_libvirt=False)
    assert (run.path / KILLED_MARK).read_text() == first, "the first reap's record was rewritten"
    assert run.run_id in again.kept_evidence
    purged = reap(include_libvirt=False, purge=True)
    assert run.run_id in purged.removed_runs and not run.path.exists()


def test_evidence_older_than_the_keep_period_is_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("BALLOON_HARNESS_RUNTIME", str(tmp_path))
    old, _ = dead_run_with_files(tmp_path)
    reap(include_libvirt=False)
    mark = old.path / KILLED_MARK
    record = json.loads(mark.read_text())
    record["reaped_at"] -= 8 * 86400
    mark.write_text(json.dumps(record))
    report = reap(include_libvirt=False, keep_days=7)
    assert old.run_id in report.removed_runs and not old.path.exists()


def test_reap_command_names_where_the_evidence_is(tmp_path):
    env = {**os.environ, "BALLOON_HARNESS_RUNTIME": str(tmp_path)}
    run, _vm = dead_run_with_files(tmp_path)
    out = subprocess.run([sys.executable, "-m", "harness.cli", "reap", "--no-libvirt"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert str(run.path) in " ".join(out.stdout.split()), out.stdout
    purge = subprocess.run([sys.executable, "-m", "harness.cli", "reap", "--no-libvirt", "--purge"],
                           env=env, capture_output=True, text=True, timeout=60)
    assert purge.returncode == 0 and not run.path.exists(), purge.stdout + purge.stderr
    assert not (tmp_path / "runs").exists(), "make clean (reap --purge) leaves nothing of ours"
