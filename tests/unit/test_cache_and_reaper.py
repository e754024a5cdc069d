"""Cache locking and publication; the reaper against real processes."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.image.build import load_built
from harness.image.cache import ImageCache
from harness.image.recipe import Recipe
from harness.reaper import qemu_processes_under, reap
from harness.runtime import Run, process_start_time
from harness.waiting import wait_for


def test_lock_serializes_concurrent_processes(tmp_path):
    """Two real processes take the same cache lock; their critical sections never overlap."""
    script = textwrap.dedent(f"""
        import sys, time, json
        from harness.image.cache import ImageCache
        cache = ImageCache(__import__('pathlib').Path({str(tmp_path / 'cache')!r}))
        with cache.lock("image-x"):
            start = time.time(); time.sleep(0.5); end = time.time()
        print(json.dumps([start, end]))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    spans = sorted(json.loads(p.communicate(timeout=30)[0]) for p in procs)
    assert spans[0][1] <= spans[1][0], spans


def test_half_written_image_is_invisible(tmp_path):
    cache = ImageCache(tmp_path / "cache")
    recipe = Recipe.named()
    # What a builder leaves mid-way: the folder without its manifest (it is written last).
    from harness.image.build import image_dir
    folder = image_dir(recipe, cache)
    folder.mkdir(parents=True)
    (folder / "disk.qcow2").write_bytes(b"partial")
    assert load_built(recipe, cache) is None


def fake_run(tmp_path, owner_pid, start_time, run_id=None):
    path = tmp_path / "runs" / (run_id or f"{owner_pid}dead")
    (path / "vms/vm-1").mkdir(parents=True)
    (path / "owner.json").write_text(json.dumps({"pid": owner_pid, "start_time": start_time}))
    return Run(path.name, path)


def test_reap_kills_only_qemu_of_dead_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("BALLOON_HARNESS_RUNTIME", str(tmp_path))
    # A dead owner: a process that has exited.
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = fake_run(tmp_path, gone.pid, 1)
    # A live owner: this test process (its real start time).
    live = fake_run(tmp_path, os.getpid(), process_start_time(os.getpid()))
    victim = qemu_standin(str(dead.path))
    survivor = qemu_standin(str(live.path))
    try:
        assert qemu_processes_under(dead.path) == [victim.pid]
        report = reap(include_libvirt=False)
        assert victim.wait(timeout=10) == -9
        assert survivor.poll() is None
        assert report.killed_pids == [victim.pid]
        assert dead.run_id in report.kept_evidence and dead.path.exists()  # see test_reap_evidence
        assert live.path.exists() and live.run_id in report.live_runs
    finally:
        for proc in (victim, survivor):
            proc.kill()
            proc.wait()


def test_owner_of_an_earlier_boot_counts_as_dead(tmp_path, monkeypatch):
    """A runtime folder that survived a reboot: pid and start time of the old boot could match
    a process of this one by chance; the recorded boot id settles it."""
    monkeypatch.setenv("BALLOON_HARNESS_RUNTIME", str(tmp_path))
    run = fake_run(tmp_path, os.getpid(), process_start_time(os.getpid()))
    assert run.owner_alive()
    record = {**run.owner(), "boot_id": "00000000-0000-0000-0000-000000000000"}
    (run.path / "owner.json").write_text(json.dumps(record))
    assert not run.owner_alive()


def test_recycled_owner_pid_counts_as_dead(tmp_path, monkeypatch):
    monkeypatch.setenv("BALLOON_HARNESS_RUNTIME", str(tmp_path))
    # Our own pid with a start time that is not ours: the owner it recorded is gone.
    run = fake_run(tmp_path, os.getpid(), process_start_time(os.getpid()) - 1)
    assert not run.owner_alive()
    assert run.run_id in reap(include_libvirt=False).kept_evidence


def qemu_standin(*args: str, user: str | None = None) -> subprocess.Popen:
    """A stand-in for QEMU: a real process called qemu-system-x86_64 (argv[0]) whose
    command line names run folders as QEMU's does (`path=...`, `file=...,format=...`)."""
    argv = ["bash", "-c", 'exec -a qemu-system-x86_64 /usr/bin/python3 -c "$0" "$@"',
            "import time; time.sleep(300)", *args]
    proc = subprocess.Popen(["runuser", "-u", user, "--", *argv] if user else argv, cwd="/tmp")
    if user is None:  # ready once bash has exec'd into the stand-in
        wait_for(lambda: is_standin(proc.pid), timeout=30, what="the QEMU stand-in to start")
    return proc


def is_standin(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"qemu-system-x86_64\0")
    except OSError:
        return False


def children(pid: int) -> list[int]:
    return [int(c) for t in Path(f"/proc/{pid}/task").iterdir()
            for c in (t / "children").read_text().split()]


def test_dead_run_spares_the_qemu_of_a_run_whose_id_extends_its_own(tmp_path, monkeypatch):
    """Reproduced: the dead run 42421234 killed the QEMU of the live run 42421234abc (its
    folder's path has the dead one's as a prefix, without the separator)."""
    monkeypatch.setenv("BALLOON_HARNESS_RUNTIME", str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = fake_run(tmp_path, gone.pid, 1, run_id="42421234")
    live = fake_run(tmp_path, os.getpid(), process_start_time(os.getpid()), run_id="42421234abc")
    victim = qemu_standin(f"socket,id=qmp,path={dead.path}/vms/vm-1/qmp.sock")
    survivor = qemu_standin(f"if=none,file={live.path}/vms/vm-1/overlay.qcow2,format=qcow2")
    try:
        assert qemu_processes_under(dead.path) == [victim.pid]
        assert qemu_processes_under(live.path) == [survivor.pid]
        reap(include_libvirt=False)
        assert victim.wait(timeout=10) == -9
        assert survivor.poll() is None, "the live run's QEMU was killed"
    finally:
        for proc in (victim, survivor):
            proc.kill()
            proc.wait()


def test_reap_never_kills_a_process_of_another_user(tmp_path, monkeypatch):
    """A process of user nobody that names a dead run's folder is not ours to kill."""
    if os.geteuid() != 0:
        pytest.skip("needs root to start a process as nobody")
    monkeypatch.setenv("BALLOON_HARNESS_RUNTIME", str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = fake_run(tmp_path, gone.pid, 1)
    runuser = qemu_standin(str(dead.path), user="nobody")
    foreign = None
    try:
        # runuser (root's, not a QEMU) forks the stand-in, which runs as nobody.
        (foreign,) = wait_for(lambda: [c for c in children(runuser.pid) if is_standin(c)] or None,
                              timeout=30, what="nobody's stand-in to start")
        assert Path(f"/proc/{foreign}").stat().st_uid == 65534
        assert qemu_processes_under(dead.path) == []
        reap(include_libvirt=False)
        assert Path(f"/proc/{foreign}").exists(), "nobody's process was killed"
    finally:
        if foreign is not None:
            os.kill(foreign, signal.SIGKILL)  # runuser then exits with its child
        runuser.kill()
        runuser.wait()
