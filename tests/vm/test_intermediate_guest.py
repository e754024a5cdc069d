"""The Intermediate daemon inside a guest under real memory pressure: the host shrinks the
balloon while a protected service and two distinct hogs keep their pages hot. The daemon
must stop the hogs, never the service, and resume every hog once the balloon grows back."""

import json
import os
from pathlib import Path

from harness.balloon import BalloonController
from harness.intermediate import (
    EVENTS,
    IntermediateOptions,
    intermediate_status,
    read_events,
    start_intermediate,
    stop_intermediate,
)
from harness.waiting import wait_for
from harness.workloads import Role, WorkloadKind, WorkloadSpec, start_workload, stop_all_workloads

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
    record = os.environ.get("BH_RECORD_INTERMEDIATE_EVENTS")
    if record:  # how tests/unit/intermediate/data/guest-run-events.jsonl was recorded
        Path(record).write_text(vm.ssh.run(f"cat {EVENTS}").stdout)
