"""A workload's cgroup stopped whole with signals, and page-out of what is stopped, on this host
(real processes, real cgroups, real process_madvise). The host has no swap: anonymous pages
cannot leave RAM here, so page-out is shown on file-backed pages, which it drops; the guest test
(tests/vm/test_intermediate_guest.py) shows anonymous memory going to swap."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import is_stopped, move_to_cgroup, popen_marked, set_oom_score_adj, starttime, stays, wait_for

from harness.guest.intermediate.actions import Performer
from harness.guest.intermediate.classify import Classifier
from harness.guest.intermediate.cli import build_parser, config_from_args
from harness.guest.intermediate.config import FreezeMethod, PageOutVia
from harness.guest.intermediate.core import CoreState, Decision, Rules, Stop, decide, release_all
from harness.guest.intermediate.events import EventLog, read_events
from harness.guest.intermediate.observe import Observer
from harness.guest.intermediate.pageout import Cancelled, PageOutResult, Pager, madvise_member
from harness.guest.intermediate.procs import read_memory
from harness.guest.intermediate.reading import PressureReading
from harness.guest.intermediate.snapshot import Observation
from harness.guest.intermediate.state import StateStore
from harness.guest.intermediate.units import Member, StopUnit, UnitKind

MB = 1024

# A process that maps a file and keeps its pages resident (page cache mapped by it alone).
MAPPER = """
import argparse, mmap, os, sys, time
p = argparse.ArgumentParser()
p.add_argument("--ready"); p.add_argument("--name"); p.add_argument("--counter"); p.add_argument("--file")
p.add_argument("--mb", type=int)
a = p.parse_args()
with open("/proc/self/comm", "w") as f:
    f.write(a.name[:15])
size = a.mb << 20
with open(a.file, "wb") as f:
    for _ in range(a.mb):
        f.write(os.urandom(1 << 20))
fd = os.open(a.file, os.O_RDONLY)
m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
total = 0
for off in range(0, size, 4096):
    total += m[off]
with open(a.ready + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(a.ready + ".tmp", a.ready)
while True:
    time.sleep(0.05)
"""


def start_mapper(workdir: Path, name: str, mb: int) -> int:
    script = workdir / "mapper.py"
    script.write_text(MAPPER)
    ready = workdir / f"ready-{name}"
    popen_marked([sys.executable, str(script), "--ready", str(ready), "--name", name,
                  "--file", str(workdir / f"{name}.data"), "--mb", str(mb)])
    wait_for(ready.exists, 30, what=f"{name} mapped {mb} MB")
    return int(ready.read_text())


def rss_kb(pid: int) -> int:
    return read_memory(pid).rss_kb


def test_signal_method_stops_a_workloads_cgroup_as_one_unit(spawn, start_daemon, psi, test_cgroup):
    workload = test_cgroup("workload")
    # Three processes of one workload, each in a session (hence a process group) of its own.
    members = [spawn(f"wl{i}", new_session=True) for i in range(3)]
    for member in members:
        move_to_cgroup(member.pid, workload)
    daemon = start_daemon("--scope-cgroup", os.path.dirname(workload), "--no-page-out")
    psi.set(60)
    stop = daemon.wait_event("stop")
    pids = sorted(m.pid for m in members)
    assert stop["kind"] == "cgroup" and stop["method"] == "signal" and sorted(stop["pids"]) == pids, stop
    assert stop["unit"].startswith("cgroup:/") and stop["unit"].endswith("/workload")
    wait_for(lambda: all(is_stopped(p) for p in pids), 3, what="every member stopped")
    daemon.wait_event("skip", lambda e: e["reason"] == "nothing-to-stop")
    assert len(daemon.events("stop")) == 1, "one unit, one stop"
    psi.set(0)
    resume = daemon.wait_event("resume")
    assert sorted(resume["pids"]) == pids and resume["unit"] == stop["unit"]
    assert resume["calm_for_s"] >= 0.5 and "available_kb" in resume, "the resume says why now"
    wait_for(lambda: not any(is_stopped(p) for p in pids), 3, what="every member resumed")
    assert all(m.makes_progress() for m in members)
    assert daemon.terminate() == 0


def test_a_process_joining_the_cgroup_during_the_stop_is_stopped_too(spawn, start_daemon, psi, test_cgroup):
    workload = test_cgroup("joiner")
    first = spawn("wlfirst", new_session=True)
    move_to_cgroup(first.pid, workload)
    late = spawn("wllate", new_session=True)  # distinct, in scope (a descendant of pytest)
    daemon = start_daemon("--scope-cgroup", os.path.dirname(workload), "--no-page-out", "--stop-interval", "30")
    psi.set(60)
    daemon.wait_event("stop")
    move_to_cgroup(late.pid, workload)  # it joins a stopped unit: the rescans (every 0.5 s) see it
    psi.set(12)

    def late_neither_stopped_nor_held() -> bool:
        return not is_stopped(late.pid) and late.pid not in {s["pid"] for s in daemon.status()["stopped"]}

    # Signals stopped the members the scan saw: a process that joins afterwards runs on, and is
    # not recorded as held (only a frozen cgroup freezes whoever joins it).
    stays(late_neither_stopped_nor_held, 1.5, interval=0.1, what="a process joining later is not ours")
    psi.set(0)
    wait_for(lambda: not is_stopped(first.pid), 5, what="resumed")
    assert daemon.terminate() == 0


def test_page_out_drops_a_stopped_units_pages_and_no_page_out_leaves_them(start_daemon, psi, workdir):
    pid = start_mapper(workdir, "mapped", 64)
    before = rss_kb(pid)
    assert before >= 64 * MB
    daemon = start_daemon("--no-page-out")
    psi.set(60)
    stop = daemon.wait_event("stop")
    assert stop["page_out"] is False and stop["pids"] == [pid]
    psi.set(12)  # between: held, nothing else decided
    stays(lambda: rss_kb(pid) >= before * 0.9, 1.5, what="without page-out the stopped pages stay resident")
    assert daemon.events("page-out") == []
    psi.set(0)
    wait_for(lambda: not is_stopped(pid), 5, what="resumed")
    assert daemon.terminate() == 0

    daemon = start_daemon()  # page-out is on by default
    psi.set(60)
    stop = daemon.wait_event("stop")
    assert stop["page_out"] is True
    event = daemon.wait_event("page-out", timeout=30)
    assert event["unit"] == stop["unit"] and event["via"] == "process_madvise" and event["outcome"] == "done", event
    assert event["freed_kb"] >= 48 * MB and event["rss_before_kb"] >= 64 * MB, event
    assert event["ms"] >= 0 and event["chunks"] >= 4
    assert event["freed_kb"] <= event["asked_kb"] <= event["chunks"] * 16 * 1024, event
    assert "no swap" in (event["note"] or ""), "this host has no swap: the event says so"
    assert is_stopped(pid) and rss_kb(pid) <= before - 48 * MB, "really gone from RAM while stopped"
    psi.set(0)
    wait_for(lambda: not is_stopped(pid), 5, what="resumed")
    assert rss_kb(pid) <= before - 48 * MB, "a resume pages nothing back in by force"
    assert daemon.terminate() == 0


def test_page_out_via_reclaim_without_a_memory_controller_says_why(start_daemon, psi, spawn):
    victim = spawn("noreclaim")
    daemon = start_daemon("--page-out-via", "reclaim")
    psi.set(60)
    event = daemon.wait_event("page-out", timeout=10)
    assert event["via"] == "none" and event["outcome"] == "unavailable" and event["freed_kb"] == 0
    assert "no memory.reclaim" in event["note"], event
    psi.set(0)
    wait_for(lambda: not is_stopped(victim.pid), 5, what="resumed")
    assert daemon.terminate() == 0


@pytest.fixture
def pager(workdir: Path):
    events = EventLog(str(workdir / "pager-events.jsonl"))
    made: list[Pager] = []

    def make(**kwargs) -> Pager:
        made.append(Pager(events, **kwargs))
        return made[-1]

    yield make
    for pager in made:
        pager.close()
    events.close()


def mapped_unit(pid: int) -> StopUnit:
    return StopUnit(kind=UnitKind.PROCESS, key=f"pid:{pid}", members=(Member(pid, starttime(pid), "mapped"),),
                    method=FreezeMethod.SIGNAL)


def test_a_page_out_works_in_bounded_chunks_and_stops_at_a_cancel(workdir):
    pid = start_mapper(workdir, "chunked", 256)
    before = rss_kb(pid)
    calls = []

    def check() -> None:  # what the page-out thread calls between two chunks
        calls.append(rss_kb(pid))
        if len(calls) > 10:
            raise Cancelled()

    result = PageOutResult()
    with pytest.raises(Cancelled):
        madvise_member(mapped_unit(pid).members[0], 2 * MB, check, result)
    assert result.chunks == 10
    freed = before - rss_kb(pid)
    # Ten chunks of 2 MiB at most (a mapping's first chunk may be shorter, up to its alignment).
    assert 2 * MB <= freed <= 20 * MB + 4 * MB, (before, freed)
    assert all(a >= b for a, b in zip(calls, calls[1:], strict=False)), "each chunk frees, none brings back"


def test_a_queued_page_out_cancelled_before_it_starts_leaves_an_event(pager, workdir):
    first, second = start_mapper(workdir, "first", 64), start_mapper(workdir, "second", 8)
    worker = pager(via=PageOutVia.MADVISE)  # not started yet: both jobs wait in the queue
    worker.submit(mapped_unit(first), None)
    worker.submit(mapped_unit(second), None)
    worker.cancel(f"pid:{second}", "gone")
    worker.start()
    wait_for(lambda: not worker.busy(), 30, what="the page-outs to end")
    events = {e["unit"]: e for e in read_events(str(workdir / "pager-events.jsonl"))}
    assert events[f"pid:{second}"]["outcome"] == "cancelled:gone" and events[f"pid:{second}"]["chunks"] == 0
    assert events[f"pid:{first}"]["outcome"] == "done" and events[f"pid:{first}"]["freed_kb"] >= 48 * MB
    assert rss_kb(second) >= 8 * MB, "a cancelled job pages nothing out"


def test_madvise_chunks_never_cut_a_large_folio(workdir):
    # Large page-cache folios (and THPs) are skipped by MADV_PAGEOUT when a range covers them in
    # part: even a tiny chunk size is rounded up to whole, aligned 2 MiB steps.
    pid = start_mapper(workdir, "folios", 32)
    before = rss_kb(pid)
    result = PageOutResult()
    assert madvise_member(mapped_unit(pid).members[0], Pager(EventLog(None), chunk_kb=4).chunk_kb, lambda: None, result)
    assert before - rss_kb(pid) >= 24 * MB


def test_a_resume_cancels_the_units_page_out(spawn, workdir, psi):
    # The page-out thread is not started, so the job is still queued when the resume comes:
    # the resume must cancel it (and say so), not leave it to page out a running process.
    victim = spawn("resumedpager")
    config = config_from_args(build_parser().parse_args([
        "run", "--pressure-file", psi.path, "--scope-pid", str(os.getpid()), "--state-dir", str(workdir / "state"),
        "--min-rss", "0"]))
    events = EventLog(str(workdir / "performer-events.jsonl"))
    observer = Observer(Classifier(config.selection, self_pids={os.getpid()}), config.method)
    worker = Pager(events)
    performer = Performer(config, StateStore(config.state_dir), events, observer, worker)
    rules = Rules.of(config)
    try:
        scan, _ = observer.scan(())
        obs = Observation(now=0.0, wall=time.time(), reading=PressureReading(0.0, 60, 60, 0), scan=scan)
        decision = decide(CoreState(), rules, obs)
        assert isinstance(decision, Decision) and any(isinstance(a, Stop) and a.page_out for a in decision.actions)
        state = performer.perform(decision, obs)
        wait_for(lambda: is_stopped(victim.pid), 3, what="stopped")
        assert worker.busy()
        performer.perform(release_all(state, rules, replace(obs, now=1.0), "exit"), obs)
        wait_for(lambda: not is_stopped(victim.pid), 3, what="resumed")
        assert not worker.busy()
        (event,) = [e for e in read_events(str(workdir / "performer-events.jsonl")) if e["event"] == "page-out"]
        assert event["outcome"] == "cancelled:resumed" and event["chunks"] == 0, event
    finally:
        worker.close()
        events.close()


def test_a_workloads_oom_exempt_parent_is_stopped_and_resumed_with_it(spawn, start_daemon, psi, test_cgroup):
    workload = test_cgroup("oomexempt")
    parent, worker = spawn("wlparent", new_session=True), spawn("wlworker", new_session=True)
    if not set_oom_score_adj(parent.pid, -1000):
        pytest.skip("cannot lower oom_score_adj here (no CAP_SYS_RESOURCE)")
    for proc in (parent, worker):
        move_to_cgroup(proc.pid, workload)
    daemon = start_daemon("--scope-cgroup", os.path.dirname(workload), "--no-page-out")
    psi.set(60)
    stop = daemon.wait_event("stop")
    assert stop["kind"] == "cgroup" and sorted(stop["pids"]) == sorted([parent.pid, worker.pid]), stop
    wait_for(lambda: is_stopped(parent.pid) and is_stopped(worker.pid), 3, what="both stopped")
    psi.set(12)
    stays(lambda: is_stopped(parent.pid), 1.2, interval=0.1, what="not resumed as reclassified at a rescan")
    psi.set(0)
    wait_for(lambda: not is_stopped(parent.pid) and not is_stopped(worker.pid), 5, what="both resumed")
    assert daemon.terminate() == 0
