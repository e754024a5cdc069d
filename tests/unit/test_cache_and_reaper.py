"""Cache locking and publication; the reaper against real processes."""

import json
import os
import subprocess
import sys
import textwrap

from harness.image.build import load_built
from harness.image.cache import ImageCache
from harness.image.recipe import Recipe
from harness.reaper import qemu_processes_under, reap
from harness.runtime import Run, process_start_time


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


def fake_run(tmp_path, owner_pid, start_time):
    path = tmp_path / "runs" / f"{owner_pid}dead"
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
    # Stand-ins for QEMU: real processes whose command line names the run folder.
    sleeper = "import time; time.sleep(120)"
    victim = subprocess.Popen([sys.executable, "-c", sleeper, "qemu-system-x86_64", str(dead.path)])
    survivor = subprocess.Popen([sys.executable, "-c", sleeper, "qemu-system-x86_64", str(live.path)])
    try:
        assert qemu_processes_under(dead.path) == [victim.pid]
        report = reap(include_libvirt=False)
        assert victim.wait(timeout=10) == -9
        assert survivor.poll() is None
        assert report.killed_pids == [victim.pid]
        assert dead.run_id in report.removed_runs and not dead.path.exists()
        assert live.path.exists() and live.run_id in report.live_runs
    finally:
        for proc in (victim, survivor):
            proc.kill()
            proc.wait()


def test_recycled_owner_pid_counts_as_dead(tmp_path, monkeypatch):
    monkeypatch.setenv("BALLOON_HARNESS_RUNTIME", str(tmp_path))
    # Our own pid with a start time that is not ours: the owner it recorded is gone.
    run = fake_run(tmp_path, os.getpid(), process_start_time(os.getpid()) - 1)
    assert not run.owner_alive()
    assert run.run_id in reap(include_libvirt=False).removed_runs
