"""The decision core's timing rules on synthetic traces: no process, no clock, no sleep.

`Sim` drives core.decide like the daemon does: it answers the core's requests for a scan (from
the simulated processes) and for memory figures, and settles every action as succeeded unless
told otherwise. Times are plain numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from harness.guest.intermediate.config import FreezeMethod, Thresholds
from harness.guest.intermediate.core import (
    CoreState,
    DaemonState,
    Decision,
    Drop,
    Emit,
    Resume,
    ResumeOutcome,
    Rules,
    Stop,
    StopOutcome,
    decide,
    settle,
)
from harness.guest.intermediate.reading import PressureReading
from harness.guest.intermediate.snapshot import CgroupFacts, Memory, Observation, Proc, Scan

MB = 1024
RULES = Rules(thresholds=Thresholds(stop_above=20, resume_below=5, hold=2.0), stop_interval=1.0,
              resume_headroom=1.0, resume_reserve_kb=64 * MB, resume_grace=5.0, max_stopped=None,
              rescan_interval=2.0, method=FreezeMethod.SIGNAL)
HIGH, CALM = 50.0, 0.0


def distinct(pid: int, rss_mb: int = 10, swap_mb: int = 0, **kw) -> Proc:
    return Proc(pid, starttime=pid * 10, comm=f"p{pid}", reason="distinct", rss_kb=rss_mb * MB,
                swap_kb=swap_mb * MB, pgid=kw.pop("pgid", 1), state=kw.pop("state", "S"), cgroup=kw.pop("cgroup", "/w"))


def spared(pid: int, reason: str = "protected:core") -> Proc:
    return Proc(pid, starttime=pid * 10, comm=f"p{pid}", reason=reason)


@dataclass
class Sim:
    rules: Rules = RULES
    procs: dict[int, Proc] = field(default_factory=dict)
    available_mb: int = 10_000
    fail_resume: set[int] = field(default_factory=set)  # pids whose SIGCONT fails (EPERM)
    state: CoreState = field(default_factory=CoreState)
    log: list[tuple[float, object]] = field(default_factory=list)
    scans: int = 0
    groups: dict[int, tuple[int, ...]] = field(default_factory=dict)  # pgid -> every live member
    cgroups: dict[str, tuple[int, ...]] = field(default_factory=dict)  # freezable leaf cgroup -> its procs

    def add(self, *procs: Proc) -> Sim:
        for proc in procs:
            self.procs[proc.pid] = proc
        return self

    def _scan(self) -> Scan:
        self.scans += 1
        return Scan(procs=tuple(self.procs[p] for p in sorted(self.procs)), groups=tuple(sorted(self.groups.items())),
                    cgroups=tuple(CgroupFacts(path, f"/sys/fs/cgroup{path}", None, pids)
                                  for path, pids in sorted(self.cgroups.items())))

    def _memory(self, units) -> Memory:
        swap = {u.key: sum(self.procs[m.pid].swap_kb for m in u.members if m.pid in self.procs) for u in units}
        return Memory(available_kb=self.available_mb * MB, swap_kb=tuple(sorted(swap.items())))

    def step(self, t: float, fast: float | None, avg10: float | None = None) -> list[object]:
        reading = None if fast is None else PressureReading(t, fast if avg10 is None else avg10, fast, 0.0)
        obs = Observation(now=t, wall=1000.0 + t, reading=reading)
        while True:
            result = decide(self.state, self.rules, obs)
            if isinstance(result, Decision):
                break
            if result.scan:
                obs = replace(obs, scan=self._scan())
            else:
                obs = replace(obs, memory=self._memory(result.memory_for))
        state = result.state
        for action in result.actions:
            if isinstance(action, Stop):
                for m in action.unit.members:
                    self.procs[m.pid] = replace(self.procs[m.pid], state="T")
                state = settle(state, self.rules, StopOutcome(action.unit.key, action.unit.members))
            elif isinstance(action, Resume):
                failed = tuple(m for m in action.held.unit.members if m.pid in self.fail_resume)
                for m in action.held.unit.members:
                    if m.pid in self.procs and m not in failed:
                        self.procs[m.pid] = replace(self.procs[m.pid], state="S")
                state = settle(state, self.rules, ResumeOutcome(action, failed, t))
            self.log.append((t, action))
        self.state = state
        return list(result.actions)

    def run(self, start: float, end: float, fast: float | None, avg10: float | None = None, dt: float = 0.1) -> None:
        steps = round((end - start) / dt)
        for i in range(steps):
            self.step(round(start + i * dt, 3), fast, avg10)

    # -- what happened ---------------------------------------------------------------------------
    def stops(self) -> list[tuple[float, str]]:
        return [(t, a.unit.key) for t, a in self.log if isinstance(a, Stop)]

    def resumes(self) -> list[tuple[float, str, str]]:
        return [(t, a.held.unit.key, a.reason) for t, a in self.log if isinstance(a, Resume)]

    def emitted(self, event: str) -> list[tuple[float, Emit]]:
        return [(t, a) for t, a in self.log if isinstance(a, Emit) and a.event == event]

    def skips(self, reason: str | None = None) -> list[tuple[float, int | None, str]]:
        return [(t, a.pid, a.reason) for t, a in self.emitted("skip") if reason is None or a.reason == reason]


def test_hold_calm_must_last_hold_seconds_before_a_resume():
    sim = Sim().add(distinct(10))
    sim.step(0.0, HIGH)
    assert sim.stops() == [(0.0, "pid:10")]
    sim.run(0.1, 1.0, 12)  # between the thresholds
    sim.run(1.0, 2.9, CALM)  # calm since 1.0: not yet 2 s
    assert sim.resumes() == []
    sim.run(2.9, 3.2, CALM)
    assert sim.resumes() == [(3.0, "pid:10", "calm")], "resumed at the first tick 2 s into the calm"


def test_between_resets_the_hold():
    sim = Sim().add(distinct(10))
    sim.step(0.0, HIGH)
    sim.run(0.1, 1.5, CALM)  # 1.4 s of calm
    sim.run(1.5, 2.0, 10)  # BETWEEN: neither stops nor resumes, and the calm starts over
    sim.run(2.0, 3.9, CALM)
    assert sim.resumes() == [] and sim.stops() == [(0.0, "pid:10")]
    sim.run(3.9, 4.1, CALM)
    assert sim.resumes() == [(4.0, "pid:10", "calm")]


def test_between_neither_stops_nor_resumes():
    sim = Sim().add(distinct(10, rss_mb=20), distinct(11))
    sim.step(0.0, HIGH)
    for i, value in enumerate([8, 15, 9, 19.99, 5, 16, 10, 12] * 5):
        sim.step(0.1 + i * 0.1, value)
    assert sim.stops() == [(0.0, "pid:10")] and sim.resumes() == []
    assert sim.state.phase is DaemonState.HOLDING


def test_stop_interval_spaces_the_stops():
    sim = Sim().add(distinct(10, rss_mb=30), distinct(11, rss_mb=20), distinct(12, rss_mb=10))
    sim.run(0.0, 3.0, HIGH)
    assert sim.stops() == [(0.0, "pid:10"), (1.0, "pid:11"), (2.0, "pid:12")]


def test_largest_resident_set_first_and_last_stopped_first_resumed():
    sim = Sim().add(distinct(10, rss_mb=5), distinct(11, rss_mb=50), distinct(12, rss_mb=20))
    sim.run(0.0, 3.0, HIGH)
    assert [k for _, k in sim.stops()] == ["pid:11", "pid:12", "pid:10"]
    sim.run(3.0, 9.0, CALM)
    assert [(t, k) for t, k, _ in sim.resumes()] == [(5.0, "pid:10"), (6.0, "pid:12"), (7.0, "pid:11")], \
        "last stopped first, one per stop interval"


def test_resume_grace_ignores_a_fast_spike_but_not_sustained_pressure():
    sim = Sim().add(distinct(10))
    sim.step(0.0, HIGH)
    sim.run(0.1, 2.2, CALM)
    assert sim.resumes() == [(2.1, "pid:10", "calm")]
    sim.run(2.2, 4.0, 60, avg10=0)  # the swap-in spike: fast high, avg10 quiet, within the grace
    assert len(sim.stops()) == 1
    sim.step(4.0, 60, avg10=40)  # sustained: avg10 >= stop-above stops even within the grace
    assert sim.stops()[-1] == (4.0, "pid:10")


def test_after_the_grace_a_fast_spike_stops_again():
    sim = Sim().add(distinct(10))
    sim.step(0.0, HIGH)
    sim.run(0.1, 2.2, CALM)
    sim.run(2.2, 7.0, 60, avg10=0)  # grace of 5 s from the resume at 2.1: until 7.1
    assert len(sim.stops()) == 1
    sim.run(7.0, 7.3, 60, avg10=0)
    assert sim.stops()[-1] == (7.1, "pid:10")


def test_high_avg10_alone_is_lag():
    sim = Sim().add(distinct(10))
    sim.run(0.0, 2.0, 0, avg10=40)
    assert sim.stops() == []
    sim.step(2.0, 8, avg10=40)
    assert sim.stops() == [(2.0, "pid:10")]


def test_max_stopped_resumes_under_pressure_then_cools_down_for_hold():
    sim = Sim(rules=replace(RULES, max_stopped=3.0)).add(distinct(10))
    sim.run(0.0, 8.0, HIGH)
    assert sim.stops()[0] == (0.0, "pid:10")
    assert sim.resumes()[0] == (3.0, "pid:10", "max-stopped")
    assert [t for t, pid, _ in sim.skips("cooldown:max-stopped")] == [3.0]
    # Not stopped again within --hold (2 s) of the resume: next stop at the first interval >= 5.
    assert sim.stops()[1] == (5.0, "pid:10")


def test_headroom_needs_room_for_the_swapped_out_pages_plus_the_reserve():
    # Not resident pages: a big resident unit with nothing swapped out fits.
    sim = Sim(available_mb=100).add(distinct(10, rss_mb=5000, swap_mb=0), distinct(11, rss_mb=10, swap_mb=50))
    sim.run(0.0, 2.0, HIGH)
    assert [k for _, k in sim.stops()] == ["pid:10", "pid:11"]
    sim.run(2.0, 6.0, CALM)
    # pid:11 needs 50 + 64 = 114 MB > 100: blocked; the older pid:10 needs 0 + 64: resumed.
    assert [(k, r) for _, k, r in sim.resumes()] == [("pid:10", "calm")]
    (blocked,) = [a for _, a in sim.emitted("skip") if a.reason == "resume-blocked:headroom"]
    assert dict(blocked.extra) == {"unit": "pid:11", "need_kb": 114 * MB, "available_kb": 100 * MB}
    sim.available_mb = 114
    sim.run(6.0, 8.0, CALM)
    assert [k for _, k, _ in sim.resumes()] == ["pid:10", "pid:11"]


def test_headroom_factor_multiplies_the_swap_and_zero_disables_the_gate():
    sim = Sim(rules=replace(RULES, resume_headroom=2.0), available_mb=150).add(distinct(10, swap_mb=50))
    sim.step(0.0, HIGH)
    sim.run(0.1, 4.0, CALM)
    assert sim.resumes() == []  # 2 x 50 + 64 = 164 > 150
    sim = Sim(rules=replace(RULES, resume_headroom=0.0), available_mb=0).add(distinct(10, swap_mb=50))
    sim.step(0.0, HIGH)
    sim.run(0.1, 4.0, CALM)
    assert [k for _, k, _ in sim.resumes()] == ["pid:10"]


def test_skips_are_reported_once_per_episode():
    sim = Sim().add(distinct(10), distinct(11), spared(20), spared(21, "never-stop:sshd"))
    sim.run(0.0, 3.0, HIGH)  # three stop decisions: two stops, then nothing to stop
    assert sorted(((pid, r) for _, pid, r in sim.skips()), key=str) == [
        (20, "protected:core"), (21, "never-stop:sshd"), (None, "nothing-to-stop")]
    sim.run(3.0, 8.0, CALM)
    assert sim.state.phase is DaemonState.CALM  # the episode is over
    sim.run(8.0, 9.0, HIGH)
    assert sorted((pid, r) for t, pid, r in sim.skips() if t >= 8) == [(20, "protected:core"), (21, "never-stop:sshd")]


def test_one_pressure_event_a_second_while_high():
    sim = Sim().add(*(distinct(10 + i) for i in range(5)))
    sim.run(0.0, 3.5, HIGH)
    events = sim.emitted("pressure")
    assert [t for t, _ in events] == [0.0, 1.0, 2.0, 3.0]
    assert dict(events[0][1].extra)["previous"] == "calm"
    assert all(dict(e.extra)["previous"] is None for _, e in events[1:]), "periodic events have no previous"


def test_a_held_unit_that_becomes_protected_is_resumed_at_the_next_rescan():
    sim = Sim().add(distinct(10), distinct(11))
    sim.run(0.0, 1.0, HIGH)
    sim.run(1.0, 2.0, 12)
    sim.procs[10] = replace(spared(10, "protected:dependent"), state="T")  # a protected process connected to it
    sim.run(2.0, 2.5, 12)  # BETWEEN: only the rescan (every 2 s) can resume it
    assert sim.resumes() == [(2.0, "pid:10", "reclassified:protected:dependent")]


def test_a_held_unit_whose_processes_are_gone_is_dropped():
    sim = Sim().add(distinct(10))
    sim.step(0.0, HIGH)
    del sim.procs[10]
    sim.run(0.1, 2.5, 12)
    assert [(t, type(a).__name__) for t, a in sim.log if isinstance(a, Drop)] == [(2.0, "Drop")]
    assert sim.state.held == () and sim.resumes() == []


def test_someone_elses_stopped_process_is_skipped():
    sim = Sim().add(distinct(10, rss_mb=99, state="T"), distinct(11))
    sim.step(0.0, HIGH)
    assert sim.stops() == [(0.0, "pid:11")]
    assert sim.skips("already-stopped") == [(0.0, 10, "already-stopped")]


def test_a_process_group_stops_whole_only_when_every_member_is_a_candidate():
    sim = Sim(groups={10: (10, 11)}).add(distinct(10, pgid=10), distinct(11, pgid=10))
    sim.step(0.0, HIGH)
    assert sim.stops() == [(0.0, "pgid:10")]
    mixed = Sim(groups={10: (10, 11, 99)}).add(distinct(10, pgid=10), distinct(11, pgid=10))
    mixed.step(0.0, HIGH)
    assert mixed.stops() == [(0.0, "pid:10")], "pid 99 (out of scope) is in the group: one process at a time"


def test_no_reading_resumes_everything_and_stops_nothing_until_a_valid_one():
    sim = Sim().add(distinct(10, rss_mb=20), distinct(11))
    sim.run(0.0, 2.0, HIGH)
    sim.step(2.0, None)
    assert [(k, r) for _, k, r in sim.resumes()] == [("pid:11", "no-reading"), ("pid:10", "no-reading")]
    sim.run(2.1, 5.0, None)
    assert len(sim.stops()) == 2 and sim.state.held == ()
    assert [a.reason for _, a in sim.emitted("pressure")][-1] == "unknown"
    sim.step(5.0, HIGH)
    assert len(sim.stops()) == 3


def test_a_failed_resume_keeps_the_unit_held_and_is_retried_a_stop_interval_later():
    sim = Sim(fail_resume={10}).add(distinct(10))
    sim.step(0.0, HIGH)
    sim.run(0.1, 2.2, CALM)
    assert sim.resumes() == [(2.1, "pid:10", "calm")]
    assert [h.unit.key for h in sim.state.held] == ["pid:10"], "a failed resume must not drop the record"
    sim.run(2.2, 3.1, CALM)
    assert len(sim.resumes()) == 1, "not retried before a stop interval"
    sim.fail_resume.clear()
    sim.run(3.1, 3.5, CALM)
    assert [t for t, _, _ in sim.resumes()] == [2.1, 3.1] and sim.state.held == ()


def test_a_stop_that_stopped_nothing_is_not_held():
    state = CoreState()
    obs = Observation(now=0.0, wall=0.0, reading=PressureReading(0, 50, 50, 0), scan=Scan(procs=(distinct(10),)))
    result = decide(state, RULES, obs)
    assert isinstance(result, Decision) and [type(a) for a in result.actions if not isinstance(a, Emit)] == [Stop]
    assert settle(result.state, RULES, StopOutcome("pid:10", ())).held == ()


def test_decide_is_pure():
    state = CoreState()
    obs = Observation(now=0.0, wall=0.0, reading=PressureReading(0, 50, 50, 0), scan=Scan(procs=(distinct(10),)))
    first, second = decide(state, RULES, obs), decide(state, RULES, obs)
    assert first == second and state == CoreState()


@pytest.mark.parametrize("missing, need", [("scan", "scan"), ("memory", "memory_for")])
def test_the_core_asks_for_what_it_needs(missing, need):
    sim = Sim().add(distinct(10))
    if missing == "scan":
        result = decide(CoreState(), RULES, Observation(0.0, 0.0, PressureReading(0, 50, 50, 0)))
        assert result.scan
    else:
        sim.step(0.0, HIGH)
        sim.run(0.1, 2.0, CALM)
        result = decide(sim.state, RULES, Observation(2.1, 0.0, PressureReading(2, 0, 0, 0), scan=sim._scan()))
        assert [u.key for u in result.memory_for] == ["pid:10"]
