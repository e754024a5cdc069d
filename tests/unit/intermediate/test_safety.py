"""Safety: nothing stays stopped -- SIGTERM, SIGKILL (watchdog), crashed predecessors, recycled
pids, the resume-all subcommand -- and clear errors for bad options."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, blocked_in_poll, is_alive, is_stopped, marked_env, starttime, stays, wait_for

from harness.guest.intermediate.config import FreezeMethod
from harness.guest.intermediate.state import StateStore, StoppedRecord
from harness.guest.intermediate.units import Member, StopUnit, UnitKind

CRASH_IN_LOOP = Path(__file__).with_name("crash_in_loop.py")


def run_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.guest.intermediate", *args],
        env=marked_env({"BALLOON_HARNESS_CONTROL": "1"}),
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def record_for(pid: int, start: int, comm: str = "x") -> StoppedRecord:
    return StoppedRecord(
        unit=StopUnit(
            kind=UnitKind.PROCESS,
            key=f"pid:{pid}",
            members=(Member(pid=pid, starttime=start, comm=comm),),
            method=FreezeMethod.SIGNAL,
        ),
        since=time.time(),
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_sigterm_sigint_and_sighup_resume_everything(spawn, start_daemon, psi, signum):
    a = spawn("terma", rss_mb=10)
    b = spawn("termb")
    daemon = start_daemon()
    psi.set(60)
    wait_for(lambda: is_stopped(a.pid) and is_stopped(b.pid), 10, what="both stopped")
    daemon.popen.send_signal(signum)
    assert daemon.popen.wait(timeout=10) == 0
    assert not is_stopped(a.pid) and not is_stopped(b.pid)
    assert a.makes_progress() and b.makes_progress()
    exit_event = daemon.events()[-1]
    assert exit_event["event"] == "exit" and exit_event["reason"] == f"signal:{signal.Signals(signum).name}"
    assert {e["reason"] for e in daemon.events("resume")} == {"exit"}
    # Resumed by the daemon before it exited (not by its watchdog afterwards).
    assert [e["event"] for e in daemon.events() if e["event"] in ("resume", "exit")] == ["resume", "resume", "exit"]
    assert StateStore(str(daemon.state_dir)).load() == []


def test_watchdog_resumes_after_sigkill(spawn, start_daemon, psi):
    # How fast: bench/bench_intermediate.py (watchdog_resume_ms). Here: that it does, and only then.
    victim = spawn("wdvictim")
    daemon = start_daemon()
    psi.set(60)
    daemon.holds(victim.pid)
    watchdog = daemon.watchdog_ready()
    daemon.popen.send_signal(signal.SIGKILL)
    wait_for(lambda: not is_stopped(victim.pid), 10, what="watchdog resume")
    assert victim.makes_progress()
    resumed = daemon.wait_event("resume", lambda e: e["reason"] == "watchdog", timeout=10)
    assert resumed["pid"] == victim.pid and daemon.events()[-1] == resumed
    assert StateStore(str(daemon.state_dir)).load() == []
    wait_for(lambda: not is_alive(watchdog), 10, what="watchdog exit")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_the_watchdog_outlives_the_signals_the_daemon_handles(spawn, start_daemon, psi, signum):
    # `systemctl stop` or a terminal hang-up signals the daemon and its watchdog alike: the
    # watchdog must be there for the daemon's death, whatever it is.
    victim = spawn("wdsignals")
    daemon = start_daemon()
    psi.set(60)
    daemon.holds(victim.pid)
    watchdog = daemon.watchdog_ready()
    # The daemon is stopped first, so that it cannot replace a watchdog that died of the signal.
    daemon.popen.send_signal(signal.SIGSTOP)
    wait_for(lambda: is_stopped(daemon.pid), 10, what="the daemon stopped")
    os.kill(watchdog, signum)
    daemon.popen.send_signal(signal.SIGKILL)
    wait_for(lambda: not is_stopped(victim.pid), 10, what=f"the watchdog's resume after its {signum.name}")
    assert daemon.wait_event("resume", lambda e: e["reason"] == "watchdog")["pid"] == victim.pid


@pytest.mark.parametrize("via", ["new-daemon", "resume-all"])
def test_leftovers_of_a_crashed_daemon_are_resumed(spawn, start_daemon, psi, workdir, via):
    victim = spawn("leftover")
    state_dir = workdir / "shared-state"
    crashed = start_daemon(state_dir=state_dir)
    watchdog = crashed.watchdog_pid()
    psi.set(60)
    crashed.holds(victim.pid)
    # A real crash of both: the watchdog first, then the daemon.
    os.kill(watchdog, signal.SIGKILL)
    crashed.popen.send_signal(signal.SIGKILL)
    crashed.popen.wait(timeout=10)
    wait_for(lambda: not is_alive(watchdog), 10, what="the watchdog gone")
    psi.set(0)
    assert is_stopped(victim.pid), "nobody resumed it: a real leftover"
    assert [r.unit.pids for r in StateStore(str(state_dir)).load()] == [[victim.pid]]

    if via == "new-daemon":
        successor = start_daemon(state_dir=state_dir)
        start = successor.wait_event("start")
        assert start["recovered"] == [victim.pid]
        assert successor.events("resume")[0]["reason"] == "recovered"
    else:  # what the systemd unit's ExecStopPost runs after `systemctl kill -s KILL`
        out = run_cli("resume-all", "--state-dir", str(state_dir))
        assert out.returncode == 0 and json.loads(out.stdout)["resumed"] == [victim.pid]
    assert not is_stopped(victim.pid) and victim.makes_progress()
    assert StateStore(str(state_dir)).load() == []


@pytest.mark.parametrize("via", ["resume-all", "daemon-start"])
def test_recycled_pid_is_never_signalled(spawn, start_daemon, workdir, via):
    # `innocent` holds a pid the state file lists, but with another start time: it is another
    # process now.  It was stopped by someone else (the test) and must stay exactly as it is.
    innocent = spawn("innocent", signal_log=True)
    ours = spawn("ours", signal_log=True)
    os.kill(innocent.pid, signal.SIGSTOP)
    os.kill(ours.pid, signal.SIGSTOP)
    wait_for(lambda: is_stopped(innocent.pid) and is_stopped(ours.pid), 10, what="stopped by the test")
    state_dir = workdir / "state-recycled"
    store = StateStore(str(state_dir))
    store.save([record_for(innocent.pid, starttime(innocent.pid) + 12345, "innocent"), record_for(ours.pid, starttime(ours.pid), "ours")])

    if via == "resume-all":
        out = run_cli("resume-all", "--state-dir", str(state_dir))
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout)
        assert summary["resumed"] == [ours.pid] and summary["recycled"] == [innocent.pid]
    else:
        daemon = start_daemon(state_dir=state_dir)
        assert daemon.wait_event("start")["recovered"] == [ours.pid]
        assert daemon.wait_event("skip", lambda e: e["reason"] == "pid-recycled")["pid"] == innocent.pid

    wait_for(lambda: not is_stopped(ours.pid), 10, what="ours resumed")
    wait_for(lambda: ours.signal_log.exists(), 10, what="ours got SIGCONT")
    stays(lambda: is_stopped(innocent.pid), 0.3, what="innocent untouched")
    assert not innocent.signal_log.exists(), "the recycled pid received a signal"
    assert StateStore(str(state_dir)).load() == []


def test_resume_all_without_state_dir_is_harmless(workdir):
    out = run_cli("resume-all", "--state-dir", str(workdir / "never-created"))
    assert out.returncode == 0 and json.loads(out.stdout)["resumed"] == []


def test_gone_pids_are_dropped_quietly(workdir):
    # A pid that no longer exists (a short-lived process we reaped ourselves).
    proc = subprocess.Popen(["/bin/true"])
    proc.wait()
    store = StateStore(str(workdir / "state-gone"))
    store.save([record_for(proc.pid, 1)])
    out = run_cli("resume-all", "--state-dir", str(workdir / "state-gone"))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["gone"] == [proc.pid]
    assert "Traceback" not in out.stderr


def test_one_daemon_per_state_dir(start_daemon, workdir):
    state_dir = workdir / "locked"
    start_daemon(state_dir=state_dir)
    second = start_daemon(state_dir=state_dir, wait=False)
    assert second.popen.wait(timeout=20) == 2
    log = second.log().strip().splitlines()
    assert len(log) == 1 and "in use by another daemon" in log[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--stop-above", "150"], "--stop-above"),
        (["--stop-above", "10", "--resume-below", "20"], "--resume-below"),
        (["--hold", "abc"], "--hold"),
        (["--method", "magic"], "--method"),
        (["--window", "0.1"], "--window"),
        (["--scope-pid", "0"], "--scope-pid"),
        (["--scope-pid", "999999999"], "no such process"),
        (["--pressure-file", "/nonexistent/psi"], "--pressure-file"),
        (["--frobnicate"], "unrecognized"),
        # nan compares false with everything (--hold nan never resumed); inf is no duration
        (["--hold", "nan"], "--hold"),
        (["--stop-above", "nan"], "--stop-above"),
        (["--resume-below", "NaN"], "--resume-below"),
        (["--window", "inf"], "--window"),
        (["--stop-interval", "inf"], "--stop-interval"),
        (["--resume-headroom", "nan"], "--resume-headroom"),
        (["--resume-grace", "inf"], "--resume-grace"),
        (["--resume-reserve", "nan"], "--resume-reserve"),
        (["--max-stopped", "inf"], "--max-stopped"),
        (["--rescan-interval", "-inf"], "--rescan-interval"),
    ],
)
def test_bad_options_give_one_line_errors(args, message, workdir):
    out = run_cli("run", "--state-dir", str(workdir / "st"), *args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert message in lines[0] and "Traceback" not in out.stderr


def test_bad_pressure_file_content(workdir):
    bad = workdir / "bad-psi"
    bad.write_text("this is not psi\n")
    out = run_cli("run", "--state-dir", str(workdir / "st"), "--pressure-file", str(bad), "--scope-pid", str(os.getpid()))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "PSI format" in out.stderr


def test_status_without_daemon_is_a_clear_error(workdir):
    out = run_cli("status", "--control", str(workdir / "nobody.sock"))
    assert out.returncode == 1 and "cannot connect" in out.stderr and "Traceback" not in out.stderr


def test_dead_watchdog_is_replaced(spawn, start_daemon, psi):
    victim = spawn("wdrespawn")
    daemon = start_daemon()
    first = daemon.watchdog_pid()
    os.kill(first, signal.SIGKILL)
    second = wait_for(lambda: (daemon.status()["watchdog_pid"] or first) != first and daemon.status()["watchdog_pid"], 5,
                      what="a new watchdog")
    assert "watchdog exited" in daemon.log()
    psi.set(60)
    daemon.holds(victim.pid)
    wait_for(lambda: blocked_in_poll(second), 10, what="the new watchdog waiting on the daemon")
    daemon.popen.send_signal(signal.SIGKILL)
    wait_for(lambda: not is_stopped(victim.pid), 10, what="the replacement watchdog resumed it")
    assert daemon.wait_event("resume", lambda e: e["reason"] == "watchdog")["pid"] == victim.pid
    assert second != first


def break_state_writes(daemon) -> None:
    """From now on the daemon cannot write its state file, as on a full or read-only disk: the
    temp file it writes first (state.atomic_write_json: .stopped.json.<pid>.tmp) is a directory,
    so open() fails (EISDIR) -- a real failing write, not a mock."""
    (daemon.state_dir / f".stopped.json.{daemon.pid}.tmp").mkdir(parents=True)


def test_a_stop_whose_record_cannot_be_written_is_not_performed(spawn, start_daemon, psi):
    # The record comes before the signal: a unit that could not be recorded is never stopped (a
    # stopped process nobody knows about would stay stopped after a crash).
    victim = spawn("unrecorded")
    daemon = start_daemon(crashes=True)
    break_state_writes(daemon)
    psi.set(60)
    assert daemon.popen.wait(timeout=20) != 0, "the daemon cannot carry on without its state file"
    assert not is_stopped(victim.pid) and victim.makes_progress()
    assert daemon.events("stop") == [] and daemon.events("exit")[-1]["reason"] == "error"
    assert "IsADirectoryError" in daemon.log()


def test_a_crash_in_the_loop_resumes_everything_before_exit(spawn, start_daemon, psi, workdir):
    victim = spawn("crashvictim")
    trigger = workdir / "crash-now"
    daemon = start_daemon(entry=(str(CRASH_IN_LOOP),), env_extra={"BH_CRASH_TRIGGER": str(trigger)}, crashes=True)
    psi.set(60)
    daemon.holds(victim.pid)
    trigger.touch()  # the next scan (a rescan while a unit is held) raises
    assert daemon.popen.wait(timeout=20) == 1
    assert "daemon loop failed; resuming everything" in daemon.log() and "injected fault" in daemon.log()
    assert not is_stopped(victim.pid) and victim.makes_progress()
    ours = [(e["event"], e["reason"]) for e in daemon.events() if e["event"] in ("resume", "exit")]
    assert ours == [("resume", "exit"), ("exit", "error")], "resumed by the daemon itself, before it exited"
    assert StateStore(str(daemon.state_dir)).load() == []
