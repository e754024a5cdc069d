"""The host memory budget for real: a memory cgroup on this host's controller, a process that
joins it between fork and exec (the same code QEMU runs), the host OOM killer taking it when
it exceeds the budget without swap, a real swap file, and the reaper removing what a dead
run left. No VM: plain processes stand in for QEMU.

On hosts whose cgroup2 has no memory controller (the hybrid hierarchy of these machines),
the v2 code path is checked against a temporary folder that holds the files cgroup v2
would: it proves which files are written and read, not that a kernel enforces them (CI
runners with pure cgroup v2 run the real tests on v2 instead)."""

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.host.budget import HostBudget, HostSwapSpec
from harness.host.cgroup import (
    BudgetCgroup,
    CgroupVersion,
    MemoryController,
    budget_groups,
    find_memory_controller,
)
from harness.host.reap import leftover_cgroups, reap_host
from harness.host.swap import active_swaps
from harness.machine.qemu import _child_setup
from harness.runtime import Run

CONTROLLER = find_memory_controller()
needs_cgroup = pytest.mark.skipif(CONTROLLER is None or os.geteuid() != 0,
                                  reason="needs root and a mounted memory cgroup controller")

HOG = "import time\nb = bytearray({mib} << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('ok', flush=True)\ntime.sleep(60)\n"


@pytest.fixture
def run(tmp_path):
    return Run(f"{os.getpid()}{secrets.token_hex(2)}", tmp_path)


def start_in(cgroup: BudgetCgroup, mib: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOG.format(mib=mib)], stdout=subprocess.PIPE, text=True,
                            preexec_fn=_child_setup(cgroup.procs_file))


def test_mounts_are_read_for_the_memory_controller(tmp_path):
    v2 = tmp_path / "unified"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpu io memory pids\n")
    mounts = (f"cgroup2 {v2} cgroup2 rw,nosuid 0 0\n"
              "cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n")
    assert find_memory_controller(mounts) == MemoryController(CgroupVersion.V2, v2)
    (v2 / "cgroup.controllers").write_text("\n")  # hybrid: cgroup2 without memory
    assert find_memory_controller(mounts) == MemoryController(CgroupVersion.V1, Path("/sys/fs/cgroup/memory"))
    assert find_memory_controller("proc /proc proc rw 0 0\n") is None


@needs_cgroup
def test_a_process_started_in_the_budget_is_charged_there_and_the_harness_is_not(run):
    with HostBudget(run, 256, HostSwapSpec(0), CONTROLLER) as budget:
        assert budget.path.name.startswith(f"bh-{run.run_id}-") and budget.path.parent == CONTROLLER.root
        proc = start_in(budget.cgroup, 64)
        try:
            assert proc.stdout.readline().strip() == "ok"
            reading = budget.read()
            assert reading.pids == (proc.pid,)
            assert os.getpid() not in reading.pids
            assert reading.usage_mib >= 60 and reading.peak_mib >= reading.usage_mib - 1
            assert reading.oom_kills == 0
        finally:
            proc.kill()
            proc.wait()
    assert not budget.path.exists(), "the budget cgroup outlived its run"


@needs_cgroup
def test_over_the_budget_without_swap_the_host_oom_killer_takes_the_process_not_the_harness(run):
    with HostBudget(run, 96, HostSwapSpec(0), CONTROLLER) as budget:
        proc = start_in(budget.cgroup, 200)
        try:
            assert proc.wait(timeout=60) == -signal.SIGKILL
        finally:
            proc.kill()
        reading = budget.read()
        assert reading.oom_kills == 1
        assert 90 <= reading.peak_mib <= 96  # it reached the budget, and the kernel held it there
    assert not budget.path.exists()


@needs_cgroup
def test_none_means_no_swap_even_while_the_host_has_swap(run):
    """Another run's (here: this test's) swap file is on; a budget with host_swap "none"
    must still not page out: memsw (v1) or memory.swap.max (v2) holds it to zero."""
    from harness.host.swap import HostSwapFile
    other = HostSwapFile(run.path / "bh-swap-other.img", 192).create()
    try:
        with HostBudget(run, 96, HostSwapSpec(0), CONTROLLER) as budget:
            proc = start_in(budget.cgroup, 160)
            try:
                assert proc.wait(timeout=60) == -signal.SIGKILL
            finally:
                proc.kill()
            reading = budget.read()
            assert reading.oom_kills == 1 and not reading.swap_mib
    finally:
        other.remove()


@needs_cgroup
def test_with_host_swap_the_budget_pages_out_instead_of_killing(run):
    if CONTROLLER.version is CgroupVersion.V1 and not (CONTROLLER.root / "memory.memsw.limit_in_bytes").exists():
        pytest.skip("this kernel does not account swap per cgroup")
    with HostBudget(run, 96, HostSwapSpec(192), CONTROLLER) as budget:
        assert budget.swap is not None and budget.swap.path in {e.path for e in active_swaps()}
        proc = start_in(budget.cgroup, 160)
        try:
            assert proc.stdout.readline().strip() == "ok"  # it lived: 64+ MiB went to swap
            reading = budget.read()
            assert reading.oom_kills == 0
            assert reading.swap_mib is not None and reading.swap_mib > 50
            assert budget.swap_used_mib() > 50
        finally:
            proc.kill()
            proc.wait()
    # Only our own file: a parallel worker's test may have its own swap file on right now.
    assert budget.swap.path not in {e.path for e in active_swaps()}, "the swap file is still on"
    assert not budget.swap.path.exists()


@needs_cgroup
def test_the_reaper_removes_a_dead_runs_cgroup_and_swap_but_not_a_live_ones(run, tmp_path):
    dead = HostBudget(run, 128, HostSwapSpec(16), CONTROLLER)
    dead.__enter__()  # never closed: as if the run was SIGKILLed
    live_run = Run(run.run_id + "1", tmp_path / "live")
    live_run.path.mkdir()
    live = HostBudget(live_run, 128, HostSwapSpec(0), CONTROLLER).__enter__()
    try:
        assert dead.path in leftover_cgroups({run.run_id})
        assert live.path not in leftover_cgroups({run.run_id})
        removed = reap_host({run.run_id: run.path})
        assert f"cgroup {dead.path}" in removed and f"swap file {dead.swap.path}" in removed
        assert not dead.path.exists() and not dead.swap.path.exists()
        assert dead.swap.path not in {e.path for e in active_swaps()}
        assert live.path.exists()
    finally:
        dead.close()
        live.close()
    assert (live.path.name, live_run.run_id) not in [(p.name, r) for p, r in budget_groups(CONTROLLER)]


def test_v2_files_written_and_read(tmp_path):
    """cgroup v2's interface, on a folder (this host has no v2 memory controller; see above)."""
    root = tmp_path / "cgroup2"
    root.mkdir()
    controller = MemoryController(CgroupVersion.V2, root)
    group = BudgetCgroup(controller, "bh-12ab-1")
    group.path.mkdir()  # what the kernel creates with the folder:
    for name, text in {"memory.max": "max\n", "memory.swap.max": "max\n", "memory.oom.group": "1\n",
                       "cgroup.procs": "", "memory.current": str(50 << 20),
                       "memory.peak": str(80 << 20), "memory.swap.current": str(3 << 20),
                       "memory.stat": "anon 1000\nfile 10485760\n",
                       "memory.events": "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n"}.items():
        (group.path / name).write_text(text)
    group._limit(512 << 20, 0)
    assert (group.path / "memory.oom.group").read_text() == "0"
    assert (group.path / "memory.max").read_text() == str(512 << 20)
    assert (group.path / "memory.swap.max").read_text() == "0"
    reading = group.read()
    assert (reading.usage_mib, reading.peak_mib, reading.file_mib, reading.swap_mib) == (50, 80, 10, 3)
    assert (reading.oom_kills, reading.limit_hits) == (1, 7)
    assert budget_groups(controller) == [(group.path, "12ab")]


def test_budget_cgroup_names_carry_the_prefix():
    with pytest.raises(ValueError):
        BudgetCgroup(MemoryController(CgroupVersion.V1, Path("/nonexistent")), "machine")
    with pytest.raises(ValueError):
        BudgetCgroup(MemoryController(CgroupVersion.V1, Path("/nonexistent")), "bh-../../x")


def test_host_swap_spec():
    assert str(HostSwapSpec.parse("none")) == "none" and HostSwapSpec.parse("file:512").size_mib == 512
    for bad in ("file:0", "zram:64", "file:", "lots"):
        with pytest.raises(Exception, match="host swap"):
            HostSwapSpec.parse(bad)


@needs_cgroup
def test_a_libvirt_budget_is_a_partition_in_every_v1_hierarchy(run):
    from harness.host.libvirt_partition import machined_in_use
    if machined_in_use() or CONTROLLER.version is not CgroupVersion.V1:
        pytest.skip("libvirt partitions are set up here only where libvirt manages cgroup v1 itself")
    with HostBudget(run, 256, HostSwapSpec(0), CONTROLLER, libvirt=True) as budget:
        name = budget.cgroup.name
        assert name.endswith(".partition") and budget.libvirt_partition == "/" + name.removesuffix(".partition")
        cpuset = Path("/sys/fs/cgroup/cpuset") / name
        assert cpuset.is_dir() and (cpuset / "cpuset.cpus").read_text() == Path(
            "/sys/fs/cgroup/cpuset/cpuset.cpus").read_text()
        assert (Path("/sys/fs/cgroup/cpu") / name).is_dir() and budget.path.is_dir()
        left = leftover_cgroups({run.run_id})
        assert cpuset in left and budget.path in left
    assert not leftover_cgroups({run.run_id})


def test_kernel_oom_lines_are_parsed():
    from harness.host.kmsg import parse_oom_kill
    line = ("oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
            "oom_memcg=/bh-12ab-2.partition,task_memcg=/bh-12ab-2.partition/qemu-3-bh-12ab-victim.libvirt-qemu,"
            "task=qemu-system-x86,pid=4242,uid=0")
    kill = parse_oom_kill(line)
    assert (kill.pid, kill.task, kill.oom_memcg) == (4242, "qemu-system-x86", "/bh-12ab-2.partition")
    assert parse_oom_kill("Out of memory: Killed process 1 (x)") is None


@needs_cgroup
def test_the_kernel_log_names_the_process_the_oom_killer_took_in_the_budget(run):
    from harness.host.kmsg import KernelLog
    log = KernelLog.open()
    if log is None:
        pytest.skip("/dev/kmsg is not readable here")
    try:
        with HostBudget(run, 96, HostSwapSpec(0), CONTROLLER) as budget:
            proc = start_in(budget.cgroup, 200)
            assert proc.wait(timeout=60) == -signal.SIGKILL
            kills = log.oom_kills("/" + budget.cgroup.name)
            assert [k.pid for k in kills] == [proc.pid]
            assert log.oom_kills("/" + budget.cgroup.name) == []  # each record once
    finally:
        log.close()
