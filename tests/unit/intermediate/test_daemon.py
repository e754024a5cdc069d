"""The daemon end to end: real processes, real signals, a fake PSI file as the pressure source."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from conftest import (
    REPO_ROOT,
    WORKER,
    is_stopped,
    marked_env,
    pid_from_ready,
    popen_marked,
    proc_state,
    stays,
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

    changed_at = psi.set(50)
    wait_for(lambda: is_stopped(big.pid), 3, what="first distinct process stopped")
    reaction = time.monotonic() - changed_at
    assert reaction < 1.5, f"reaction {reaction:.2f}s"
    wait_for(lambda: is_stopped(small.pid), 3, what="second distinct process stopped")
    assert not big.makes_progress(0.2), "a stopped process must not make progress"

    psi.set(0)
    wait_for(lambda: not is_stopped(big.pid) and not is_stopped(small.pid), 5, what="both resumed")
    assert big.makes_progress() and small.makes_progress(), "resumed processes carry on"

    wait_for(lambda: len(daemon.events("resume")) == 2, 2, what="two resume events")
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
    wait_for(lambda: is_stopped(distinct.pid), 3, what="the distinct process stopped")
    # Keep the pressure up well past several stop decisions: nothing else may be stopped.
    stays(lambda: not any(is_stopped(p) for p in spared), 1.5, what="spared processes running")
    daemon.wait_event("skip", lambda e: e["reason"] == "nothing-to-stop")
    assert daemon.stopped_pids() == [distinct.pid]
    skips = {e["pid"]: e["reason"] for e in daemon.events("skip") if e["pid"]}
    for pid, why in spared.items():
        assert skips.get(pid) == why, (pid, skips.get(pid), why)
    # The daemon and its watchdog are in scope too (children of pytest), and spared.
    assert skips.get(daemon.pid) == "never-stop:self"
    assert skips.get(daemon.watchdog_pid()) == "never-stop:self"
    psi.set(0)
    wait_for(lambda: not is_stopped(distinct.pid), 5, what="resume")


def test_largest_resident_set_is_stopped_first(spawn, start_daemon, psi):
    small = spawn("small", rss_mb=5)
    big = spawn("big", rss_mb=80)
    medium = spawn("medium", rss_mb=30)
    daemon = start_daemon()
    psi.set(50)
    wait_for(lambda: len(daemon.events("stop")) == 3, 5, what="three stops")
    assert [e["pid"] for e in daemon.events("stop")] == [big.pid, medium.pid, small.pid]
    rss = [e["rss_kb"] for e in daemon.events("stop")]
    assert rss == sorted(rss, reverse=True)
    psi.set(0)
    wait_for(lambda: not any(is_stopped(p) for p in (small.pid, big.pid, medium.pid)), 6, what="all resumed")


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
    wait_for(lambda: all(is_stopped(p) for p in group), 2, what="the whole pipeline stopped")
    psi.set(0)
    wait_for(lambda: not any(is_stopped(p) for p in group), 6, what="pipeline resumed")
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
    wait_for(lambda: not is_stopped(a.pid), 5, what="resume")


def test_hysteresis_no_flapping_and_hold(spawn, start_daemon, psi):
    first = spawn("first", rss_mb=20)
    second = spawn("second")
    daemon = start_daemon("--stop-interval", "1", "--hold", "1.5")
    psi.set(50)
    daemon.wait_event("stop")
    psi.set(12)  # between resume-below (5) and stop-above (20)
    time.sleep(0.6)
    stops_before = len(daemon.events("stop"))
    # Oscillate between the thresholds: no stop, no resume.
    for value in (8, 15, 9, 14, 8, 16, 10, 12):
        psi.set(value)
        time.sleep(0.25)
    assert len(daemon.events("stop")) == stops_before
    assert daemon.events("resume") == []
    assert is_stopped(first.pid)
    # Calm, but shorter than --hold: still no resume.
    psi.set(0)
    time.sleep(0.8)
    psi.set(12)
    time.sleep(1.0)
    assert daemon.events("resume") == [] and is_stopped(first.pid)
    # Calm long enough: resumed.
    calm_at = psi.set(0)
    wait_for(lambda: not is_stopped(first.pid), 5, what="resume after hold")
    assert time.monotonic() - calm_at >= 1.5
    assert not is_stopped(second.pid)


def test_high_avg10_alone_is_only_lag(spawn, start_daemon, psi):
    victim = spawn("lagvictim")
    daemon = start_daemon()
    psi.set(0, avg10=40)  # avg10 still high, but nothing stalls now
    stays(lambda: not is_stopped(victim.pid), 1.5, what="not stopped on lag alone")
    assert daemon.events("stop") == []
    psi.set(8, avg10=40)  # something stalls again and avg10 is high: HIGH
    wait_for(lambda: is_stopped(victim.pid), 3, what="stopped")
    psi.set(0)
    wait_for(lambda: not is_stopped(victim.pid), 5, what="resumed")


def test_resume_waits_for_memory_headroom(spawn, start_daemon, psi):
    victim = spawn("roomy", rss_mb=10)
    # A reserve no machine can keep: the balloon is "still inflated", resuming is blocked.
    daemon = start_daemon("--resume-reserve", "100000000")
    psi.set(50)
    wait_for(lambda: is_stopped(victim.pid), 3, what="stopped")
    psi.set(0)
    blocked = daemon.wait_event("skip", lambda e: e["reason"] == "resume-blocked:headroom", timeout=5)
    assert blocked["pid"] == victim.pid and blocked["need_kb"] > blocked["available_kb"]
    stays(lambda: is_stopped(victim.pid), 1.0, what="still stopped without headroom")
    assert daemon.events("resume") == []
    assert daemon.terminate() == 0  # exit resumes regardless
    assert not is_stopped(victim.pid)
    assert daemon.events("resume")[-1]["reason"] == "exit"

    # Factor 0 disables the gate.
    daemon = start_daemon("--resume-headroom", "0")
    psi.set(50)
    wait_for(lambda: is_stopped(victim.pid), 3, what="stopped again")
    psi.set(0)
    wait_for(lambda: not is_stopped(victim.pid), 5, what="resumed without headroom check")
    assert daemon.wait_event("resume")["reason"] == "calm"


def test_max_stopped_bounds_the_stop_and_respects_hold(spawn, start_daemon, psi):
    victim = spawn("bounded")
    daemon = start_daemon("--max-stopped", "0.8", "--hold", "1.0")
    psi.set(50)  # and it stays high
    first = daemon.wait_event("stop")
    resumed = daemon.wait_event("resume", timeout=4)
    assert resumed["reason"] == "max-stopped"
    assert 0.7 <= resumed["t"] - first["t"] < 1.6
    wait_for(lambda: not is_stopped(victim.pid), 1, what="running after max-stopped")
    cooldown = daemon.wait_event("skip", lambda e: e["reason"] == "cooldown:max-stopped", timeout=2)
    assert cooldown["pid"] == victim.pid
    again = daemon.wait_event("stop", lambda e: e["t"] > resumed["t"], timeout=4)
    assert again["t"] - resumed["t"] >= 1.0, "not stopped again within --hold"
    psi.set(0)
    wait_for(lambda: not is_stopped(victim.pid), 5, what="resumed at the end")


def test_dry_run_never_signals(spawn, start_daemon, psi):
    victim = spawn("dryvictim", signal_log=True)
    daemon = start_daemon("--dry-run")
    psi.set(60)
    daemon.wait_event("stop")
    stays(lambda: proc_state(victim.pid) not in ("T", None), 1.5, what="running in dry run")
    assert victim.makes_progress()
    psi.set(0)
    daemon.wait_event("resume", timeout=5)
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
    wait_for(lambda: is_stopped(victim.pid), 3, what="stopped")
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
    wait_for(lambda: daemon.status()["state"] == "calm", 5, what="calm again")
    assert not is_stopped(victim.pid)


def test_psi_trigger_mode_runs_idle(spawn, start_daemon):
    # No pressure file: the daemon registers a real PSI trigger on /proc/pressure/memory and
    # sleeps in poll() (this host is not under memory pressure, so it stays calm).
    victim = spawn("psiidle")
    daemon = start_daemon(pressure=False)
    status = daemon.status()
    assert status["config"]["source"]["kind"] == "psi-trigger"
    assert status["config"]["source"]["window"] in (1.0, 2.0)
    assert status["state"] == "calm" and victim.pid in status["distinct"]
    time.sleep(1.2)
    assert not is_stopped(victim.pid)
    assert daemon.terminate() == 0


def test_resume_grace_ignores_the_swap_in_spike_but_not_sustained_pressure(spawn, start_daemon, psi):
    victim = spawn("pager", rss_mb=10)
    daemon = start_daemon("--hold", "0.5", "--resume-grace", "3")
    psi.set(50)
    wait_for(lambda: is_stopped(victim.pid), 3, what="stopped")
    psi.set(0, avg10=0)
    wait_for(lambda: not is_stopped(victim.pid), 5, what="resumed")
    resumed_at = time.monotonic()
    # A short spike of the fast signal with a quiet avg10: what paging a resumed process back
    # in looks like. Within the grace it stops nothing.
    psi.set(60, avg10=0)
    stays(lambda: not is_stopped(victim.pid), 2.0, what="running through the swap-in spike")
    assert len(daemon.events("stop")) == 1
    # Sustained pressure (avg10 above stop-above) stops it again, grace or not.
    psi.set(60, avg10=40)
    wait_for(lambda: is_stopped(victim.pid), 3, what="stopped again under sustained pressure")
    assert time.monotonic() - resumed_at < 6
