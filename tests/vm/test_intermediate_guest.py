"""The Intermediate daemon inside a guest under real memory pressure: the host shrinks the
balloon while a protected service and two distinct hogs keep their pages hot. The daemon
must stop the hogs, never the service, and resume every hog once the balloon grows back."""

import json
import os
import time
from pathlib import Path

import pytest

from harness.balloon import BalloonController
from harness.guestcode import install_guest_code
from harness.intermediate import (
    EVENTS,
    IntermediateOptions,
    intermediate_status,
    read_events,
    start_intermediate,
    stop_intermediate,
)
from harness.waiting import wait_for
from harness.workloads import (
    SLICE,
    Role,
    WorkloadKind,
    WorkloadSpec,
    start_workload,
    stop_all_workloads,
    workload_status,
)

SERVICE = WorkloadSpec("svc", WorkloadKind.PROTECTED, Role.PROTECTED,
                       {"workers": 2, "working_set_mib": 50, "duration_s": 600})
HOGS = [WorkloadSpec(f"hog{i}", WorkloadKind.MEMHOG, Role.DISTINCT,
                     {"size_mib": 260, "rate_mib_s": 80, "hold_s": 600}) for i in (1, 2)]


def status_or_none(vm):
    """The daemon's status, or None while the guest is too busy to answer SSH."""
    try:
        return intermediate_status(vm, timeout=20)
    except Exception:
        return None


def process_states(vm, comm_prefix):
    out = vm.ssh.run(f"ps -eo stat=,comm= | awk '$2 ~ /^{comm_prefix}/ {{print $1}}'").stdout
    return out.split()


def test_daemon_stops_hogs_not_the_service_and_resumes_them(vm):
    start_intermediate(vm, IntermediateOptions(stop_above=10, resume_below=5, hold_s=2,
                                               protect_cgroups=(SERVICE.cgroup,)))
    try:
        for spec in (SERVICE, *HOGS):
            start_workload(vm, spec)
        # Hogs at full size before the squeeze.
        wait_for(lambda: vm.ssh.run("grep -h '\"full\"' /var/lib/balloon-harness/wl-hog*.jsonl 2>/dev/null | wc -l"
                                    ).stdout.strip() == "2", timeout=120, what="both hogs to allocate 260 MiB")
        balloon = BalloonController(vm.balloon)
        balloon.set_target(560)

        def hogs_stopped():
            status = status_or_none(vm)
            if status is None:
                return None
            stopped = {entry["comm"] for entry in status["stopped"]}
            return stopped if {"hog1", "hog2"} <= stopped else None

        stopped = wait_for(hogs_stopped, timeout=240, interval=1.0,
                           what="the daemon to stop both hogs under pressure")
        assert not {c for c in stopped if c.startswith("svc")}, stopped
        assert [s[0] for s in process_states(vm, "hog")] == ["T", "T"]  # stopped (Ts: also a session leader)
        assert not [s for s in process_states(vm, "svc") if s.startswith("T")]
        assert balloon.wait_until(560, timeout=240).reached

        progress_lines = "wc -l < /var/lib/balloon-harness/wl-hog1.jsonl"
        while_stopped = int(vm.ssh.run(progress_lines).stdout)

        balloon.set_target(vm.spec.memory_mib)
        # Resumed hogs page their 260 MiB back in from swap; that pressure may make the daemon
        # stop them once more and resume them after the next calm. What must hold in the end:
        # nothing stopped, and the hogs carry on where they were.
        def all_resumed_and_progressing():
            status = status_or_none(vm)
            if status is None or status["stopped"]:
                return None
            return int(vm.ssh.run(progress_lines).stdout) > while_stopped + 1 or None

        wait_for(all_resumed_and_progressing, timeout=300, interval=2.0,
                 what="the daemon to resume every hog after the balloon grew back, and hog1 to progress")
        states = process_states(vm, "hog")
        assert len(states) == 2 and all(not s.startswith("T") for s in states), states

        events = read_events(vm)
        stops = [e for e in events if e["event"] == "stop"]
        resumes = [e for e in events if e["event"] == "resume"]
        assert {e["comm"] for e in stops} == {"hog1", "hog2"}, json.dumps(stops)[:2000]
        assert {e["comm"] for e in resumes} >= {"hog1", "hog2"}
        skipped = {(e["comm"], e["reason"]) for e in events if e["event"] == "skip" and e.get("comm", "") and
                   e["comm"].startswith("svc")}
        assert any(reason.startswith("protected:") for _, reason in skipped), skipped
        # Page-out is on by default: every stop was paged out (or its page-out cancelled by the
        # resume), each hog from its own service's cgroup.
        assert all(e["page_out"] for e in stops) and all(e["unit"].startswith("cgroup:/") for e in stops), stops
    finally:
        stop_intermediate(vm)
        stop_all_workloads(vm)
    assert vm.ssh.run("ps -eo stat= | grep -c '^T' || true").stdout.strip() == "0"
    held = json.loads(vm.ssh.run("cd /opt/balloon-harness && python3 -m harness.guest.intermediate held").stdout)
    assert held == {"stopped": [], "frozen": []}, held

    # The run's decisions, re-derived in the guest from its event log alone: no difference.
    replay = vm.ssh.run(f"cd /opt/balloon-harness && python3 -m harness.guest.intermediate replay {EVENTS}", check=False)
    assert replay.exit_status == 0, replay.stdout + replay.stderr
    assert "0 difference(s)" in replay.stdout and " stop " in replay.stdout, replay.stdout
    paged = {e["unit"] for e in read_events(vm) if e["event"] == "page-out"}
    assert paged >= {e["unit"] for e in stops}, paged
    record = os.environ.get("BH_RECORD_INTERMEDIATE_EVENTS")
    if record:  # how tests/unit/intermediate/data/guest-run-events.jsonl was recorded
        Path(record).parent.mkdir(parents=True, exist_ok=True)
        Path(record).write_text(vm.ssh.run(f"cat {EVENTS}").stdout)


# A fake /proc/pressure/memory, so that the daemon stops the hog while the guest has memory to
# spare: then only a page-out can take the hog's pages out of RAM (under real pressure the
# kernel's own reclaim would swap them out too, and "off" could not be told from "on").
FAKE_PSI = "/run/bh-fakepsi"
FAKE_PSI_WRITER = """
import sys, time
sys.path.insert(0, "/opt/balloon-harness")
from harness.guest.intermediate.fakepsi import PressureFileWriter
path = sys.argv[1]
writer, last = PressureFileWriter(path, interval=0.05).start(), None
while True:
    try:
        value = float(open(path + ".set").read())
    except (OSError, ValueError):
        value = 0.0
    if value != last:
        writer.set(value)
        last = value
    time.sleep(0.05)
"""
PAGED_HOG = WorkloadSpec("paged", WorkloadKind.MEMHOG, Role.DISTINCT, {"size_mib": 200, "rate_mib_s": 200, "hold_s": 600})


def memory_kb(vm, pid: int) -> dict[str, int]:
    out = vm.ssh.run(f"grep -E '^(VmRSS|VmSwap):' /proc/{pid}/status").stdout
    return {line.split(":")[0]: int(line.split()[1]) for line in out.splitlines()}


@pytest.mark.parametrize("page_out", [True, False], ids=["page-out", "no-page-out"])
def test_a_stopped_hogs_memory_leaves_ram_with_page_out_and_stays_without(vm, page_out):
    install_guest_code(vm)  # the workloads, and this tree's daemon
    vm.ssh.write_text("/run/bh-fakepsi.py", FAKE_PSI_WRITER)
    vm.ssh.run(f"echo 0 > {FAKE_PSI}.set && systemd-run --unit=bh-fakepsi --quiet python3 /run/bh-fakepsi.py {FAKE_PSI}"
               f" && for i in $(seq 100); do [ -e {FAKE_PSI} ] && exit 0; sleep 0.1; done; exit 1")
    try:
        start_workload(vm, PAGED_HOG)
        wait_for(lambda: '"full"' in vm.ssh.run(f"cat {PAGED_HOG.progress_path} 2>/dev/null || true").stdout,
                 timeout=120, what="the hog to allocate 200 MiB")
        pid = workload_status(vm, PAGED_HOG.name).main_pid
        assert pid
        start_intermediate(vm, IntermediateOptions(page_out=page_out, extra=(
            "--pressure-file", FAKE_PSI, "--scope-cgroup", f"/{SLICE}", "--stop-interval", "1")))
        vm.ssh.run(f"echo 60 > {FAKE_PSI}.set")
        wait_for(lambda: vm.ssh.run(f"ps -o stat= -p {pid}").stdout.strip().startswith("T"), timeout=60,
                 what="the daemon to stop the hog")
        stopped_at = time.monotonic()
        vm.ssh.run(f"echo 12 > {FAKE_PSI}.set")  # between the thresholds: held, nothing else decided
        at_stop = memory_kb(vm, pid)
        # The hog's size: with page-out on, its first chunks may already be in swap by the time
        # the stop is seen (the page-out starts with the stop).
        size = at_stop["VmRSS"] + at_stop["VmSwap"]
        assert size >= 180 * 1024, at_stop
        if page_out:
            # Most of it leaves RAM within a bounded time (the deadline), and lands in swap.
            after = wait_for(lambda: (m := memory_kb(vm, pid))["VmRSS"] < size * 0.25 and m,
                             timeout=120, interval=1.0, what="the stopped hog's VmRSS to fall under a quarter")
            assert after["VmSwap"] >= size * 0.6, after
            # `or None`: an empty list is an answer to wait_for, and the event is written when
            # the page-out ends, which can be after VmRSS has already fallen.
            event = wait_for(lambda: [e for e in read_events(vm) if e["event"] == "page-out"] or None, timeout=60,
                             what="the page-out event")[0]
            assert event["via"] == "memory.reclaim" and event["outcome"] == "done", event
            assert event["unit"] == f"cgroup:{PAGED_HOG.cgroup}" and event["freed_kb"] >= size * 0.6, event
            # Bounded chunks: no write asked for more than 16 MiB. Not a count of chunks from the
            # size: the guest's memory.reclaim may free more than it is asked (9 writes freed
            # 205 MiB in one run here).
            assert event["ms"] > 0 and event["chunks"] >= 3, event
            assert 0 < event["asked_kb"] <= event["chunks"] * 16 * 1024, event
            print(f"page-out: VmRSS {at_stop['VmRSS'] // 1024} (of {size // 1024}) -> {after['VmRSS'] // 1024} MiB (VmSwap "
                  f"{after['VmSwap'] // 1024} MiB) seen {time.monotonic() - stopped_at:.1f} s after the stop was "
                  f"seen; event: freed {event['freed_kb'] // 1024} MiB in {event['ms'] / 1000:.1f} s, {event['chunks']} chunks "
                  f"asking {event['asked_kb'] // 1024} MiB")
        else:
            deadline = stopped_at + 20
            while time.monotonic() < deadline:  # it stays: sampled for 20 s
                now = memory_kb(vm, pid)
                assert now["VmRSS"] >= at_stop["VmRSS"] * 0.9, (at_stop, now)
                time.sleep(1.0)
            print(f"no page-out: VmRSS {at_stop['VmRSS'] // 1024} -> {now['VmRSS'] // 1024} MiB over 20 s")
            assert not [e for e in read_events(vm) if e["event"] == "page-out"]
        vm.ssh.run(f"echo 0 > {FAKE_PSI}.set")
        wait_for(lambda: not vm.ssh.run(f"ps -o stat= -p {pid}").stdout.strip().startswith("T"), timeout=60,
                 what="the daemon to resume the hog")
        resumed = memory_kb(vm, pid)
        if page_out:  # nothing is paged back in by force (the hog touches its pages: they come back as it runs)
            assert resumed["VmRSS"] < size, resumed
    finally:
        stop_intermediate(vm)
        stop_all_workloads(vm)
        vm.ssh.run("systemctl stop bh-fakepsi; systemctl reset-failed bh-fakepsi 2>/dev/null; true", check=False)
    assert vm.ssh.run("ps -eo stat= | grep -c '^T' || true").stdout.strip() == "0"


def test_stress_ng_stops_and_resumes_as_one_workload(run_scenario):
    # Issue 12's run: stress-ng's worker was stopped alone, then its 7 MB wrapper, while its
    # parent (oom_score_adj -1000, never stopped alone) ran on and its timer killed the stopped
    # worker. Now the workload's service cgroup is one unit, parent included.
    result = run_scenario("stress-ng-hog", intermediate=True)
    assert result.passed, [f.detail for f in result.failures()]
    events = [json.loads(line) for line in (result.folder / "vm" / "intermediate-events.jsonl").read_text().splitlines()
              if line.strip()]
    stops = [e for e in events if e["event"] == "stop"]
    assert stops, "the squeeze stopped nothing"
    workload = "cgroup:/bhworkloads.slice/bh-wl-stress.service"
    assert {e["unit"] for e in stops} == {workload}, [(e["unit"], e["pids"]) for e in stops]
    comms = {m[2] for e in stops for m in e["members"]}
    assert {"stress-ng", "stress-ng-vm", "stress"} <= comms, comms
    resumes = [e for e in events if e["event"] == "resume" and e["unit"] == workload]
    assert len(resumes) == len(stops) and all(e["reason"] == "calm" for e in resumes), resumes
    assert result.summary["workloads"]["stress"]["completed"], result.summary["workloads"]["stress"]
