"""The daemon end to end: real processes, real signals, a fake PSI file as the pressure source."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

from conftest import (
    REPO_ROOT,
    WORKER,
    is_stopped,
    marked_env,
    pid_from_ready,
    popen_marked,
    proc_state,
    unix_socket_path,
    wait_for,
    worker_argv,
)

EVENT_KEYS = {"t", "event", "pid", "comm", "reason", "pressure"}


def test_distinct_stopped_under_pressure_and_resumed_after_calm(spawn, start_daemon, psi):
    big = spawn("distinct-big", rss_mb=20)
    small = spawn("distinct-small")
    daemon = start_daemon()
    assert not is_stopped(big.pid) and big.makes_progress()

    # How fast it reacts is measured by bench/bench_intermediate.py; here: that it does.
    psi.set(50)
    wait_for(lambda: is_stopped(big.pid), 10, what="first distinct process stopped")
    wait_for(lambda: is_stopped(small.pid), 10, what="second distinct process stopped")
    assert big.holds_still(0.3), "a stopped process must not make progress"

    psi.set(0)
    wait_for(lambda: not is_stopped(big.pid) and not is_stopped(small.pid), 10, what="both resumed")
    assert big.makes_progress() and small.makes_progress(), "resumed processes carry on"

    wait_for(lambda: len(daemon.events("resume")) == 2, 10, what="two resume events")
    stops, resumes = daemon.events("stop"), daemon.events("resume")
    assert [e["pid"] for e in stops] == [big.pid, small.pid]
    assert [e["pid"] for e in resumes] == [small.pid, big.pid], "last stopped is resumed first"
    assert all(e["reason"] == "calm" for e in resumes)
    states = [e["state"] for e in daemon.events("pressure")]
    assert "high" in states and states[-1] == "calm"
    for event in daemon.events():
        if event["event"] != "input":  # the decisions' input records are compact (README)
            assert EVENT_KEYS <= event.keys(), event
    assert daemon.terminate() == 0
    assert daemon.events()[-1]["event"] == "exit"


def test_protected_and_never_stop_processes_are_never_stopped(spawn, start_daemon, psi, exe_copy, workdir):
    # core (by comm) with a descendant, under an ancestor
    leaf_argv, leaf_ready, _ = worker_argv(exe_copy("py-core"), workdir, "leaf", "coreleaf")
    core_argv, core_ready, _ = worker_argv(exe_copy("py-core"), workdir, "core", "core", child=leaf_argv)
    ancestor = spawn("ancestor", exe="py-anc", child=core_argv)
    core, leaf = pid_from_ready(core_ready), pid_from_ready(leaf_ready)
    similar = spawn("twin", exe="py-core")
    # dependents: a pipe, a socketpair, a unix stream connection between unrelated processes
    r, w = os.pipe()
    a, b = socket.socketpair()
    try:
        pipe_core = spawn("pipecore", exe="py-core2", pass_fds=(r,))
        pipe_dep = spawn("pipedep", pass_fds=(w,))
        pair_core = spawn("paircore", exe="py-core2", pass_fds=(a.fileno(),))
        pair_dep = spawn("pairdep", pass_fds=(b.fileno(),))
    finally:
        os.close(r)
        os.close(w)
        a.close()
        b.close()
    path = unix_socket_path(workdir, "svc")
    server = spawn("server", exe="py-core2", listen=path)
    client = spawn("client", connect=path)
    # never-stop
    named = spawn("keepme")
    sshd = spawn("sshd")
    harness_cmd = spawn("harnesscmd", env_extra={"BALLOON_HARNESS_CONTROL": "1"})
    distinct = spawn("victim")

    daemon = start_daemon(
        "--protect-comm", "core", "--protect-comm", "pipecore", "--protect-comm", "paircore",
        "--protect-comm", "server", "--never-stop", "keepme",
    )
    spared = {
        core: "protected:core",
        leaf: "protected:core",
        ancestor.pid: "protected:ancestor",
        similar.pid: "protected:similar",
        pipe_core.pid: "protected:core",
        pipe_dep.pid: "protected:dependent",
        pair_core.pid: "protected:core",
        pair_dep.pid: "protected:dependent",
        server.pid: "protected:core",
        client.pid: "protected:dependent",
        named.pid: "never-stop:comm",
        sshd.pid: "never-stop:sshd",
        harness_cmd.pid: "never-stop:control-env",
    }
    psi.set(60)
    wait_for(lambda: is_stopped(distinct.pid), 10, what="the distinct process stopped")
    # The next stop decision found nothing else it may stop: every spared process was weighed.
    daemon.wait_event("skip", lambda e: e["reason"] == "nothing-to-stop")
    assert not any(is_stopped(p) for p in spared)
    assert daemon.stopped_pids() == [distinct.pid]
    skips = {e["pid"]: e["reason"] for e in daemon.events("skip") if e["pid"]}
    for pid, why in spared.items():
        assert skips.get(pid) == why, (pid, skips.get(pid), why)
    # The daemon and its watchdog are in scope too (children of pytest), and spared.
    assert skips.get(daemon.pid) == "never-stop:self"
    assert skips.get(daemon.watchdog_pid()) == "never-stop:self"
    psi.set(0)
    wait_for(lambda: not is_stopped(distinct.pid), 10, what="resume")


def test_largest_resident_set_is_stopped_first(spawn, start_daemon, psi):
    small = spawn("small", rss_mb=5)
    big = spawn("big", rss_mb=80)
    medium = spawn("medium", rss_mb=30)
    daemon = start_daemon("--stop-interval", "0.4")
    assert daemon.wait_event("start")["rules"]["stop_interval"] == 0.4
    psi.set(50)
    wait_for(lambda: len(daemon.events("stop")) == 3, 10, what="three stops")
    stops = daemon.events("stop")
    assert [e["pid"] for e in stops] == [big.pid, medium.pid, small.pid]
    rss = [e["rss_kb"] for e in stops]
    assert rss == sorted(rss, reverse=True)
    # --stop-interval apart, on the daemon's own clock (its decisions' input records).
    times = [daemon.decided_at(e) for e in stops]
    assert all(round(later - earlier, 3) >= 0.4 for earlier, later in pairwise(times)), times
    psi.set(0)
    wait_for(lambda: not any(is_stopped(p) for p in (small.pid, big.pid, medium.pid)), 10, what="all resumed")


def test_process_group_is_stopped_together(start_daemon, psi, exe_copy, workdir):
    exe = exe_copy("py-distinct")
    left = f"{exe} {WORKER} --name left --counter {workdir}/c-left --ready {workdir}/r-left"
    right = f"{exe} {WORKER} --name right --counter {workdir}/c-right --ready {workdir}/r-right"
    shell = popen_marked(["/bin/sh", "-c", f"{left} | {right}"], start_new_session=True)
    left_pid, right_pid = pid_from_ready(workdir / "r-left"), pid_from_ready(workdir / "r-right")
    group = {shell.pid, left_pid, right_pid}
    assert {os.getpgid(p) for p in group} == {shell.pid}
    daemon = start_daemon("--stop-interval", "2")
    psi.set(50)
    event = daemon.wait_event("stop")
    assert event["kind"] == "process-group" and event["unit"] == f"pgid:{shell.pid}"
    assert set(event["pids"]) == group
    wait_for(lambda: all(is_stopped(p) for p in group), 10, what="the whole pipeline stopped")
    psi.set(0)
    wait_for(lambda: not any(is_stopped(p) for p in group), 10, what="pipeline resumed")
    # SIGCONT is sent before the event is written: wait for the event itself.
    assert daemon.wait_event("resume")["unit"] == f"pgid:{shell.pid}"


def test_mixed_process_group_is_stopped_process_by_process(spawn, start_daemon, psi):
    # Workers spawned by pytest share pytest's process group, which is out of scope (pytest
    # itself is a member): the group cannot be stopped whole.
    a = spawn("mixa")
    daemon = start_daemon()
    psi.set(50)
    event = daemon.wait_event("stop")
    assert event["kind"] == "process" and event["pids"] == [a.pid]
    psi.set(0)
    wait_for(lambda: not is_stopped(a.pid), 10, what="resume")


def between(p: dict | None) -> bool:
    """A reading between the thresholds (resume-below 5, stop-above 20): neither stop nor resume."""
    return p is not None and 5 <= p["some_fast"] < 20 and 5 <= p["some_avg10"] < 20


def logged_reading(record: dict) -> dict | None:
    """The reading of an input record ([some_avg10, some_fast, full_avg10]) as `status` shows one."""
    p = record.get("p")
    return None if p is None else {"some_avg10": p[0], "some_fast": p[1], "full_avg10": p[2]}


def calm_spell_start(daemon, until_m: float) -> float:
    """When the daemon's last calm spell before `until_m` began (its input records)."""
    start = None
    for e in daemon.events("input"):
        p = logged_reading(e)
        if e["m"] > until_m or p is None:
            continue
        start = (e["m"] if start is None else start) if p["some_fast"] < 5 and p["some_avg10"] < 5 else None
    assert start is not None, "no calm input before the resume"
    return start


def test_hysteresis_no_flapping_and_hold(spawn, start_daemon, psi):
    # The timing of the rules (a short calm, a calm broken by BETWEEN) is tested sleep-free in
    # test_core.py; here the real daemon shows the same on the readings it really decided on.
    first = spawn("first", rss_mb=20)
    second = spawn("second")
    daemon = start_daemon("--stop-interval", "1", "--hold", "1.5")
    psi.set(50)
    daemon.wait_event("stop")
    psi.set(12)  # between resume-below (5) and stop-above (20)
    daemon.decisions(3, on=between)
    stops_before = len(daemon.events("stop"))
    # Oscillate between the thresholds, for longer than a stop interval: no stop, no resume.
    for value in (8, 13, 9, 12, 8, 13, 10, 12):  # well below 20: a step's first fast readings overshoot
        psi.set(value)
        daemon.decisions(5, on=lambda p, v=value: between(p) and p["some_avg10"] == v)
    assert len(daemon.events("stop")) == stops_before and daemon.events("resume") == []
    between_m = [e["m"] for e in daemon.events("input") if between(logged_reading(e))]
    assert between_m[-1] - between_m[0] > 1, "the oscillation must outlast a stop interval to prove anything"
    assert is_stopped(first.pid)
    # Calm: resumed, once the calm has lasted --hold on the daemon's clock.
    psi.set(0)
    resume = daemon.wait_event("resume", timeout=10)
    assert resume["pid"] == first.pid and resume["reason"] == "calm"
    resumed_at = daemon.decided_at(resume)
    assert round(resumed_at - calm_spell_start(daemon, resumed_at), 3) >= 1.5
    wait_for(lambda: not is_stopped(first.pid), 10, what="resumed")
    assert not is_stopped(second.pid)


def test_high_avg10_alone_is_only_lag(spawn, start_daemon, psi):
    victim = spawn("lagvictim")
    daemon = start_daemon()
    psi.set(0, avg10=40)  # avg10 still high, but nothing stalls now
    daemon.decisions(10, on=lambda p: p is not None and p["some_avg10"] == 40 and p["some_fast"] == 0)
    assert daemon.events("stop") == [] and not is_stopped(victim.pid)
    psi.set(8, avg10=40)  # something stalls again and avg10 is high: HIGH
    wait_for(lambda: is_stopped(victim.pid), 10, what="stopped")
    psi.set(0)
    wait_for(lambda: not is_stopped(victim.pid), 10, what="resumed")


def test_resume_waits_for_memory_headroom(spawn, start_daemon, psi):
    victim = spawn("roomy", rss_mb=10)
    # A reserve no machine can keep: the balloon is "still inflated", resuming is blocked.
    daemon = start_daemon("--resume-reserve", "100000000")
    psi.set(50)
    wait_for(lambda: is_stopped(victim.pid), 10, what="stopped")
    psi.set(0)
    blocked = daemon.wait_event("skip", lambda e: e["reason"] == "resume-blocked:headroom", timeout=10)
    assert blocked["pid"] == victim.pid and blocked["need_kb"] > blocked["available_kb"]
    daemon.decisions(10, on=lambda p: p is not None and p["some_fast"] == 0)
    assert daemon.events("resume") == [] and is_stopped(victim.pid)
    assert daemon.terminate() == 0  # exit resumes regardless
    assert not is_stopped(victim.pid)
    assert daemon.events("resume")[-1]["reason"] == "exit"

    # Factor 0 disables the gate.
    daemon = start_daemon("--resume-headroom", "0")
    psi.set(50)
    wait_for(lambda: is_stopped(victim.pid), 10, what="stopped again")
    psi.set(0)
    wait_for(lambda: not is_stopped(victim.pid), 10, what="resumed without headroom check")
    assert daemon.wait_event("resume")["reason"] == "calm"


def test_max_stopped_bounds_the_stop_and_respects_hold(spawn, start_daemon, psi):
    victim = spawn("bounded")
    daemon = start_daemon("--max-stopped", "0.8", "--hold", "1.0")
    psi.set(50)  # and it stays high
    first = daemon.wait_event("stop")
    resumed = daemon.wait_event("resume", timeout=10)
    assert resumed["reason"] == "max-stopped" and resumed["pressure"]["some_fast"] >= 20, "resumed under pressure"
    assert round(daemon.decided_at(resumed) - daemon.decided_at(first), 3) >= 0.8
    wait_for(lambda: not is_stopped(victim.pid), 10, what="running after max-stopped")
    cooldown = daemon.wait_event("skip", lambda e: e["reason"] == "cooldown:max-stopped", timeout=10)
    assert cooldown["pid"] == victim.pid
    again = daemon.wait_event("stop", lambda e: e["t"] > resumed["t"], timeout=10)
    assert round(daemon.decided_at(again) - daemon.decided_at(resumed), 3) >= 1.0, "not stopped again within --hold"
    psi.set(0)
    wait_for(lambda: not is_stopped(victim.pid), 10, what="resumed at the end")


def test_dry_run_never_signals(spawn, start_daemon, psi):
    victim = spawn("dryvictim", signal_log=True)
    daemon = start_daemon("--dry-run")
    # No watchdog (it exists to resume what a dead daemon stopped: nothing here).
    assert daemon.wait_event("start")["watchdog_pid"] is None and daemon.status()["watchdog_pid"] is None
    assert Path(f"/proc/{daemon.pid}/task/{daemon.pid}/children").read_text().split() == []
    psi.set(60)
    daemon.wait_event("stop")
    assert victim.makes_progress() and proc_state(victim.pid) != "T"
    psi.set(0)
    daemon.wait_event("resume", timeout=10)
    assert all(e["dry_run"] for e in daemon.events("stop") + daemon.events("resume"))
    assert not (daemon.state_dir / "stopped.json").exists()
    assert daemon.terminate() == 0
    assert not victim.signal_log.exists(), "a dry run must not even send SIGCONT"


def test_status_over_control_socket(spawn, start_daemon, psi):
    core = spawn("statuscore", exe="py-core")
    victim = spawn("statusvictim")
    daemon = start_daemon("--protect-comm", "statuscore")
    status = daemon.status()
    assert status["state"] == "calm" and status["stopped"] == []
    assert {"pid": core.pid, "comm": "statuscore", "reason": "protected:core"} in status["protected"]
    assert victim.pid in status["distinct"]
    psi.set(50)
    wait_for(lambda: is_stopped(victim.pid), 10, what="stopped")
    status = daemon.status()
    assert status["state"] in ("high", "holding")
    assert set(status["pressure"]) == {"some_avg10", "some_fast", "full_avg10"}
    (entry,) = status["stopped"]
    assert entry["pid"] == victim.pid and entry["comm"] == "statusvictim" and entry["since"] <= time.time()
    # The CLI client, run the way the harness runs control commands.
    out = subprocess.run(
        [sys.executable, "-m", "harness.guest.intermediate", "status", "--control", str(daemon.control_path)],
        env=marked_env({"BALLOON_HARNESS_CONTROL": "1"}),
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode == 0, out.stderr
    cli_status = json.loads(out.stdout)
    assert [s["pid"] for s in cli_status["stopped"]] == [victim.pid]
    psi.set(0)
    wait_for(lambda: daemon.status()["state"] == "calm", 10, what="calm again")
    assert not is_stopped(victim.pid)


def test_psi_trigger_mode_runs_idle(spawn, start_daemon):
    # No pressure file: the daemon registers a real PSI trigger on /proc/pressure/memory and
    # sleeps in poll() (this host is not under memory pressure, so it stays calm).
    victim = spawn("psiidle")
    daemon = start_daemon(pressure=False)
    status = daemon.status()
    assert status["config"]["source"]["kind"] == "psi-trigger"
    assert status["config"]["source"]["window"] in (1.0, 2.0)
    assert victim.pid in status["distinct"]
    # It decides in poll() timeouts (1 s) when nothing triggers.
    wait_for(lambda: daemon.status()["ticks"] >= status["ticks"] + 2, 10, what="two more decisions")
    # The host's real pressure decides; a stop must have been on a high reading.
    for stop in daemon.events("stop"):
        assert max(stop["pressure"]["some_fast"], stop["pressure"]["some_avg10"]) >= 20, stop
    assert daemon.terminate() == 0


def test_resume_grace_ignores_the_swap_in_spike_but_not_sustained_pressure(spawn, start_daemon, psi):
    victim = spawn("pager", rss_mb=10)
    # A grace no test outlasts: every reading below falls within it, however slow the machine.
    daemon = start_daemon("--hold", "0.5", "--resume-grace", "3600")
    psi.set(50)
    wait_for(lambda: is_stopped(victim.pid), 10, what="stopped")
    psi.set(0, avg10=0)
    daemon.wait_event("resume", timeout=10)
    wait_for(lambda: not is_stopped(victim.pid), 10, what="resumed")
    # The fast signal spikes with a quiet avg10: what paging a resumed process back in looks
    # like. Within the grace it stops nothing, over many stop intervals (0.3 s).
    psi.set(60, avg10=0)
    daemon.decisions(20, on=lambda p: p is not None and p["some_fast"] >= 20 and p["some_avg10"] == 0)
    assert len(daemon.events("stop")) == 1 and not is_stopped(victim.pid)
    # Sustained pressure (avg10 above stop-above) stops it again, within the grace.
    psi.set(60, avg10=40)
    wait_for(lambda: is_stopped(victim.pid), 10, what="stopped again under sustained pressure")
    assert daemon.events("stop")[-1]["pressure"]["some_avg10"] == 40


def test_the_daemons_own_ancestors_are_never_stopped(spawn, start_daemon, psi):
    # The daemon runs under a shell that is in scope (a child of this pytest), as it would under
    # the shell or service manager that started it: stopping that is never useful.
    victim = spawn("ancvictim")
    daemon = start_daemon(wrapper=("/bin/sh", "-c", '"$@"; exit $?', "sh"))
    shell = daemon.pid
    real = daemon.wait_event("start")["pid"]
    assert real != shell and Path(f"/proc/{real}/stat").read_text().split(") ")[1].split()[1] == str(shell)
    psi.set(60)
    wait_for(lambda: is_stopped(victim.pid), 10, what="the distinct process stopped")
    daemon.wait_event("skip", lambda e: e["reason"] == "nothing-to-stop")
    skips = {e["pid"]: e["reason"] for e in daemon.events("skip") if e["pid"]}
    assert skips.get(shell) == "never-stop:daemon-ancestor" and not is_stopped(shell)
    assert daemon.stopped_pids() == [victim.pid]
    os.kill(real, signal.SIGTERM)
    assert daemon.popen.wait(timeout=10) == 0 and not is_stopped(victim.pid)
