"""Issue 11: nothing left stopped or frozen, signals that cannot reach a recycled pid, a scope
pinned to its process, fail-safe pressure readings, a control socket no client can stall.

Each test reproduces its fault for real. Where a race decides (a process exits or forks between
the scan and the stop), the test drives the daemon's actions (actions.Performer) with the plan
the scan made and the world as it is afterwards: the same interleaving, every time.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    REPO_ROOT,
    WORKER,
    is_alive,
    is_stopped,
    move_to_cgroup,
    pid_from_ready,
    popen_marked,
    spawn_with_pid,
    starttime,
    wait_for,
    worker_argv,
)

from harness.guest.intermediate.actions import Performer
from harness.guest.intermediate.classify import Classifier
from harness.guest.intermediate.config import DaemonConfig, FreezeMethod, Selection
from harness.guest.intermediate.core import CoreState, Decision, Held, Stop
from harness.guest.intermediate.events import EventLog, read_events
from harness.guest.intermediate.fakepsi import PressureFileWriter
from harness.guest.intermediate.freezer import Identity, PinnedProcess, read_frozen
from harness.guest.intermediate.held import held
from harness.guest.intermediate.observe import Observer
from harness.guest.intermediate.procs import normalize_cgroup
from harness.guest.intermediate.snapshot import Observation
from harness.guest.intermediate.state import StateStore
from harness.guest.intermediate.units import Member, StopUnit, UnitKind

NO_SIGCONT = (sys.executable, str(Path(__file__).with_name("no_sigcont.py")))


class Actions:
    """The daemon's action performer on a plan made earlier (a stale scan)."""

    def __init__(self, workdir: Path, selection: Selection, method: FreezeMethod = FreezeMethod.SIGNAL) -> None:
        self.config = DaemonConfig(selection=selection, method=method, state_dir=str(workdir / "state"),
                                   events_path=str(workdir / "events.jsonl"))
        self.store = StateStore(self.config.state_dir)
        self.events = EventLog(self.config.events_path)
        observer = Observer(Classifier(selection, self_pids={os.getpid()}), method)
        self.performer = Performer(self.config, self.store, self.events, observer)

    def stop(self, unit: StopUnit) -> CoreState:
        decision = Decision(CoreState(held=(Held(unit=unit, since=time.time(), stopped_at=0.0),)), (Stop(unit),))
        return self.performer.perform(decision, Observation(now=0.0, wall=time.time(), reading=None))

    def logged(self, kind: str) -> list[dict]:
        return [e for e in read_events(self.config.events_path) if e["event"] == kind]

    def recorded(self) -> list[list[int]]:
        return [r.unit.pids for r in self.store.load()]


def stop_pending(pid: int) -> bool:
    """Is a SIGSTOP pending for pid (its own or its thread group's pending set)?"""
    bit = 1 << (signal.SIGSTOP - 1)
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return any(int(fields[key].strip(), 16) & bit for key in ("SigPnd", "ShdPnd"))


def member(pid: int, comm: str) -> Member:
    return Member(pid=pid, starttime=starttime(pid), comm=comm)


# == --method cgroup: the scanned process exits before the freeze, its child lives on =============


@pytest.mark.parametrize("scope", ["cgroup", "pid"])
def test_a_frozen_cgroup_is_always_recorded(spawn, test_cgroup, workdir, exe_copy, scope):
    cgroup_dir = test_cgroup("orphan")
    child_argv, child_ready, _ = worker_argv(exe_copy("py-distinct"), workdir, "orphan-child", "orphchild")
    parent = spawn("orphparent", child=child_argv)
    child = pid_from_ready(child_ready)
    move_to_cgroup(parent.pid, cgroup_dir)
    move_to_cgroup(child, cgroup_dir)
    # What the scan planned: the parent alone in its leaf cgroup.
    unit = StopUnit(kind=UnitKind.CGROUP, key=f"cgroup:{normalize_cgroup(cgroup_dir)}",
                    members=(member(parent.pid, "orphparent"),), method=FreezeMethod.CGROUP, cgroup_dir=cgroup_dir)
    parent.popen.kill()  # ... and then it exits; the child lives on in the cgroup
    parent.popen.wait()
    selection = (Selection(scope_cgroup=normalize_cgroup(os.path.dirname(cgroup_dir))) if scope == "cgroup"
                 else Selection(scope_pid=os.getpid()))  # the re-parented child is out of this scope
    actions = Actions(workdir, selection, FreezeMethod.CGROUP)
    state = actions.stop(unit)

    frozen = bool(read_frozen(cgroup_dir))
    assert frozen == bool(actions.recorded()), f"frozen={frozen} but the state file lists {actions.recorded()}"
    if scope == "cgroup":  # the child is in scope and distinct: frozen, and recorded as the member
        assert frozen and actions.recorded() == [[child]] and state.held[0].unit.pids == [child]
        (stop,) = actions.logged("stop")
        assert stop["pids"] == [child] and stop["newcomers"] == [child]
    else:  # a newcomer that is not distinct: the stop is abandoned and the cgroup thawed
        assert not frozen and actions.recorded() == [] and state.held == ()
        assert actions.logged("stop-abandoned")[0]["reason"] == "newcomer:out-of-scope"


# == process groups: newcomers are classified before they are stopped ==============================


@pytest.mark.parametrize("newcomer, stopped", [("grpkeep", False), ("grpdist", True)])
def test_a_process_groups_newcomer_is_classified_before_it_is_stopped(spawn, workdir, exe_copy, newcomer, stopped):
    child_argv, child_ready, _ = worker_argv(exe_copy("py-newc"), workdir, "newc", newcomer)
    leader = spawn("grpleader", new_session=True, child=child_argv)
    child = pid_from_ready(child_ready)
    assert os.getpgid(child) == leader.pid
    # The scan saw the leader alone in its group; the child forked after it.
    unit = StopUnit(kind=UnitKind.PROCESS_GROUP, key=f"pgid:{leader.pid}", members=(member(leader.pid, "grpleader"),),
                    method=FreezeMethod.SIGNAL)
    actions = Actions(workdir, Selection(scope_pid=os.getpid(), never_stop_comms=("grpkeep",)))
    state = actions.stop(unit)
    if stopped:  # distinct: stopped and recorded with the group
        wait_for(lambda: is_stopped(leader.pid) and is_stopped(child), 10, what="the group stopped")
        assert actions.recorded() == [[leader.pid, child]] and actions.logged("stop")[0]["newcomers"] == [child]
    else:  # never-stop: not stopped; the group cannot stop whole, so its leader is resumed
        assert not is_stopped(child)
        wait_for(lambda: not is_stopped(leader.pid), 10, what="the leader resumed")
        assert actions.recorded() == [] and state.held == ()
        assert actions.logged("stop-abandoned")[0]["reason"] == "newcomer:never-stop:comm"


# == pidfd: a signal cannot reach a recycled pid ===================================================


def test_a_pinned_process_cannot_be_confused_with_its_pids_next_owner(spawn):
    first = spawn("pinfirst")
    pinned = PinnedProcess.pin(member(first.pid, "pinfirst"))
    assert isinstance(pinned, PinnedProcess)
    try:
        first.popen.kill()  # between the start-time check and the signal, the process exits
        first.popen.wait()
        successor = spawn_with_pid(first.pid, [sys.executable, str(WORKER), "--name", "pinnext"])
        if successor is None:
            pytest.skip(f"pid {first.pid} could not be recycled (taken by another process)")
        wait_for(lambda: is_alive(successor.pid), 10, what="the successor running")
        with pytest.raises(ProcessLookupError):
            pinned.send(signal.SIGSTOP)
        # A SIGSTOP that had been sent is either still pending or already took effect.
        assert not is_stopped(successor.pid) and not stop_pending(successor.pid), "the signal reached the pid's new owner"
    finally:
        pinned.close()
    # Pinning by the old record now finds another process: never signalled.
    assert PinnedProcess.pin(Member(first.pid, pinned.member.starttime, "pinfirst")) is Identity.RECYCLED


def test_scope_pid_is_pinned_to_its_start_time(spawn, start_daemon, psi, workdir, exe_copy):
    scope = spawn("scoperoot")
    daemon = start_daemon("--scope-pid", str(scope.pid), scope=False)
    scope.popen.kill()
    scope.popen.wait()
    child_argv, child_ready, _ = worker_argv(exe_copy("py-distinct"), workdir, "under-new", "undernew")
    successor = spawn_with_pid(scope.pid, [exe_copy("py-distinct"), str(WORKER), "--name", "newroot",
                                           "--child", json.dumps(child_argv)])
    if successor is None:
        pytest.skip(f"pid {scope.pid} could not be recycled (taken by another process)")
    under = pid_from_ready(child_ready)
    psi.set(60)
    # The daemon decided with nothing in scope (not the new owner's descendants).
    daemon.wait_event("skip", lambda e: e["reason"] == "nothing-to-stop")
    assert not is_stopped(under) and daemon.events("stop") == []
    assert "is gone: nothing is in scope" in daemon.log()


# == a resume that fails (EPERM) keeps its record ==================================================


def test_a_failed_resume_keeps_the_record_until_a_resume_succeeds(spawn, start_daemon, psi, workdir):
    victim = spawn("eperm")
    daemon = start_daemon(wrapper=NO_SIGCONT)  # every SIGCONT the daemon (and its watchdog) sends fails
    watchdog = daemon.watchdog_pid()
    psi.set(60)
    wait_for(lambda: is_stopped(victim.pid), 10, what="stopped")
    psi.set(0)
    failed = daemon.wait_event("resume-failed", timeout=10)
    assert failed["pids"] == [victim.pid] and failed["reason"] == "calm" and "not permitted" in failed["error"]
    store = StateStore(str(daemon.state_dir))
    assert [r.unit.pids for r in store.load()] == [[victim.pid]], "dropped from the state file while stopped"
    assert daemon.status()["stopped"][0]["pid"] == victim.pid

    assert daemon.terminate() == 0  # its exit resume fails too; then the watchdog's
    wait_for(lambda: not is_alive(watchdog), 10, what="the watchdog's own attempt")
    reasons = [e["reason"] for e in daemon.events("resume-failed")]
    assert reasons[-2:] == ["exit", "watchdog"], reasons
    assert is_stopped(victim.pid) and [r.unit.pids for r in store.load()] == [[victim.pid]]

    # Without the filter, resume-all (the unit's ExecStopPost) finds it and resumes it.
    from test_safety import run_cli

    out = run_cli("resume-all", "--state-dir", str(daemon.state_dir))
    assert out.returncode == 0 and json.loads(out.stdout)["resumed"] == [victim.pid]
    assert not is_stopped(victim.pid) and store.load() == []


def test_resume_all_keeps_what_it_could_not_resume(spawn, start_daemon, psi, workdir):
    victim = spawn("epermall")
    state_dir = workdir / "kept"
    daemon = start_daemon(state_dir=state_dir)
    psi.set(60)
    daemon.holds(victim.pid)
    os.kill(daemon.watchdog_pid(), signal.SIGKILL)
    daemon.popen.send_signal(signal.SIGKILL)
    daemon.popen.wait(timeout=10)
    out = popen_marked([*NO_SIGCONT, sys.executable, "-m", "harness.guest.intermediate", "resume-all",
                        "--state-dir", str(state_dir)], cwd=str(REPO_ROOT), stdout=-1)
    summary = json.loads(out.communicate(timeout=20)[0])
    assert out.returncode == 1 and summary["failed"] == [victim.pid] and summary["resumed"] == []
    assert [r.unit.pids for r in StateStore(str(state_dir)).load()] == [[victim.pid]]
    successor = start_daemon(state_dir=state_dir)  # the next daemon resumes it (no filter)
    assert successor.wait_event("start")["recovered"] == [victim.pid]
    assert not is_stopped(victim.pid)


# == --pressure-file: no stale readings ============================================================


def test_a_deleted_pressure_file_resumes_everything_and_stops_nothing_until_it_is_back(spawn, start_daemon, psi):
    victims = [spawn(f"delvictim{i}", rss_mb=10 - i) for i in range(4)]
    daemon = start_daemon()
    psi.set(60)
    wait_for(lambda: is_stopped(victims[0].pid), 10, what="the first stop")
    psi.stop()
    os.unlink(psi.path)
    resumed = daemon.wait_event("resume", lambda e: e["reason"] == "no-reading", timeout=10)
    wait_for(lambda: not any(is_stopped(v.pid) for v in victims), 10, what="everything resumed")
    stops = len(daemon.events("stop"))
    ticks = daemon.status()["ticks"]
    wait_for(lambda: daemon.status()["ticks"] >= ticks + 20, 10, what="twenty more decisions without a file")
    assert len(daemon.events("stop")) == stops, "stopped more without a valid reading"
    assert daemon.status()["pressure"] is None and resumed["pid"] in {v.pid for v in victims}
    assert "resuming everything until it is valid again" in daemon.log()
    # The file is back: the daemon carries on with valid readings.
    with PressureFileWriter(psi.path) as again:
        again.set(60)
        wait_for(lambda: len(daemon.events("stop")) > stops, 10, what="a stop on valid readings")
        again.set(0)
        wait_for(lambda: not any(is_stopped(v.pid) for v in victims), 10, what="resumed")


def test_nan_in_the_pressure_file_is_no_reading(spawn, start_daemon, psi):
    victim = spawn("nanvictim")
    daemon = start_daemon()
    psi.set(60)
    wait_for(lambda: is_stopped(victim.pid), 10, what="stopped")
    psi.set(0, avg10=math.nan)  # "some avg10=nan": was BETWEEN for ever, so never resumed
    resumed = daemon.wait_event("resume", timeout=10)
    assert resumed["reason"] == "no-reading" and not is_stopped(victim.pid)


# == the control socket ============================================================================


def test_idle_control_clients_cannot_hold_up_a_stop(spawn, start_daemon, psi):
    victim = spawn("ctlvictim")
    daemon = start_daemon()
    idle = []
    try:
        for _ in range(12):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.settimeout(5)
            client.connect(str(daemon.control_path))
            idle.append(client)
        assert daemon.status()["state"] == "calm"  # the server answers past twelve silent clients
        psi.set(60)
        daemon.holds(victim.pid)
        # The stop happened while all twelve were connected and silent: none was closed.
        for client in idle:
            client.setblocking(False)
            with pytest.raises(BlockingIOError):
                client.recv(1)
    finally:
        for client in idle:
            client.close()
    psi.set(0)
    wait_for(lambda: not is_stopped(victim.pid), 10, what="resumed")


# == held: stopped processes and frozen cgroups' tasks =============================================


def test_held_lists_stopped_processes_and_frozen_cgroup_tasks(spawn, test_cgroup):
    stopped, frozen, running = spawn("heldstop"), spawn("heldfrozen"), spawn("heldrun")
    cgroup_dir = test_cgroup("held")
    move_to_cgroup(frozen.pid, cgroup_dir)
    os.kill(stopped.pid, signal.SIGSTOP)
    Path(cgroup_dir, "cgroup.freeze").write_text("1")
    wait_for(lambda: read_frozen(cgroup_dir), 10, what="frozen")
    try:
        found = held()
        assert stopped.pid in {p["pid"] for p in found["stopped"]}
        assert {"pid": frozen.pid, "comm": "heldfrozen", "cgroup": normalize_cgroup(cgroup_dir)} in found["frozen"]
        assert running.pid not in {p["pid"] for p in found["stopped"] + found["frozen"]}
        assert frozen.pid not in {p["pid"] for p in found["stopped"]}, "a frozen task is not in state T"
    finally:
        Path(cgroup_dir, "cgroup.freeze").write_text("0")
        os.kill(stopped.pid, signal.SIGCONT)


def test_held_labels_name_each_held_process():
    from harness.guest.intermediate.held import held_labels

    text = json.dumps({"stopped": [{"pid": 3, "comm": "a", "state": "T"}],
                       "frozen": [{"pid": 4, "comm": "b", "cgroup": "/x"}]})
    assert held_labels(text) == ["a(3)", "b(4):frozen:/x"]
    assert held_labels(json.dumps({"stopped": [], "frozen": []})) == []
