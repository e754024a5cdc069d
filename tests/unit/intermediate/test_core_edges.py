"""The decision core's finer promises, sleep-free (Sim from test_core.py): the exact events it
emits, the bookkeeping of held units (members that leave or join, retries after a failed
resume), the boundaries of its time rules, and the rules' record. Written to kill the mutants
`make mutation` found alive (tests/mutation-survivors.md lists the harmless ones)."""

from __future__ import annotations

from dataclasses import replace

from test_core import CALM, HIGH, MB, RULES, Sim, distinct, spared

from harness.guest.intermediate.config import DaemonConfig, FreezeMethod, Thresholds
from harness.guest.intermediate.core import (
    CoreState,
    DaemonState,
    Drop,
    Emit,
    Held,
    Resume,
    ResumeOutcome,
    Rules,
    Stop,
    StopOutcome,
    release_all,
    settle,
)
from harness.guest.intermediate.reading import PressureLevel
from harness.guest.intermediate.snapshot import OUT_OF_SCOPE, Observation, Proc
from harness.guest.intermediate.units import Member, StopUnit, UnitKind

BETWEEN = 12.0


def held_unit(pid: int, **kw) -> Held:
    unit = StopUnit(UnitKind.PROCESS, f"pid:{pid}", (Member(pid, pid * 10, f"p{pid}"),), FreezeMethod.SIGNAL)
    return Held(unit=unit, since=1000.0, stopped_at=0.0, **kw)


# == what the state records ======================================================================


def test_the_decided_state_carries_the_level():
    sim = Sim().add(distinct(10))
    for t, fast, level in ((0.0, HIGH, PressureLevel.HIGH), (0.1, BETWEEN, PressureLevel.BETWEEN),
                           (0.2, CALM, PressureLevel.CALM), (0.3, None, PressureLevel.UNKNOWN)):
        sim.step(t, fast)
        assert sim.state.level is level, t


def test_a_stop_is_held_with_its_wall_clock_and_monotonic_times():
    sim = Sim().add(distinct(10))
    sim.step(0.5, HIGH)
    (record,) = sim.state.held
    assert (record.since, record.stopped_at, record.retry_at) == (1000.5, 0.5, -float("inf"))


# == release_all: the daemon is exiting ==========================================================


def test_release_all_resumes_everything_last_stopped_first_even_a_unit_awaiting_its_retry():
    sim = Sim(fail_resume={12}).add(distinct(10, rss_mb=30), distinct(11, rss_mb=20), distinct(12, rss_mb=10))
    sim.run(0.0, 3.0, HIGH)
    sim.run(3.0, 5.1, CALM)  # calm since 3.0: at 5.0 the top unit's resume fails (retry at 6.0)
    assert sim.resumes() == [(5.0, "pid:12", "calm")] and sim.state.held[-1].retry_at == 6.0
    state = sim.state
    decision = release_all(state, RULES, Observation(now=5.5, wall=1005.5, reading=None), "exit")
    assert [(type(a), a.held.unit.key, a.index, a.reason) for a in decision.actions] == [
        (Resume, "pid:12", 2, "exit"), (Resume, "pid:11", 1, "exit"), (Resume, "pid:10", 0, "exit")]
    assert decision.state.held == () and decision.state.last_resume_at == 5.5
    assert decision.state.level is state.level is PressureLevel.CALM
    assert replace(decision.state, held=state.held, last_resume_at=state.last_resume_at) == state


# == pressure events =============================================================================


def test_pressure_events_say_the_state_the_previous_one_and_how_many_are_stopped():
    sim = Sim().add(distinct(10, rss_mb=20), distinct(11))
    sim.run(0.0, 1.5, HIGH)
    events = [(t, dict(e.extra), e.reason) for t, e in sim.emitted("pressure")]
    assert events == [(0.0, {"state": "high", "previous": "calm", "stopped": 0}, "high"),
                      (1.0, {"state": "high", "previous": None, "stopped": 1}, "high")]


def test_losing_the_reading_is_reported_once_when_nothing_else_changes():
    sim = Sim()
    sim.run(0.0, 0.5, None)
    assert [(t, e.reason, dict(e.extra)) for t, e in sim.emitted("pressure")] == [
        (0.0, "unknown", {"state": "calm", "previous": None, "stopped": 0})]
    sim.run(0.5, 1.0, CALM)
    sim.step(1.0, None)
    assert [t for t, _ in sim.emitted("pressure")] == [0.0, 1.0], "a new outage is reported again"


def test_losing_the_reading_while_holding_is_one_state_change_event():
    sim = Sim().add(distinct(10))
    sim.step(0.0, HIGH)
    sim.run(0.1, 1.0, None)
    assert [(t, e.reason, dict(e.extra)) for t, e in sim.emitted("pressure")][1:] == [
        (0.1, "unknown", {"state": "calm", "previous": "high", "stopped": 0})]


# == skips =======================================================================================


def test_skip_events_name_the_process():
    sim = Sim().add(distinct(10), distinct(11, rss_mb=99, state="T"), spared(20))
    sim.run(0.0, 2.0, HIGH)
    assert [e for _, e in sim.emitted("skip")] == [
        Emit("skip", "protected:core", 20, "p20"), Emit("skip", "already-stopped", 11, "p11"),
        Emit("skip", "nothing-to-stop", None, None)]


def test_pressure_back_within_an_episode_does_not_repeat_the_skips():
    sim = Sim().add(distinct(10, rss_mb=20), distinct(11), spared(20))
    sim.run(0.0, 1.0, HIGH)
    sim.run(1.0, 2.0, BETWEEN)  # holding: the episode goes on
    sim.run(2.0, 2.5, HIGH)
    assert [k for _, k in sim.stops()] == ["pid:10", "pid:11"]
    assert [(t, pid) for t, pid, _ in sim.skips("protected:core")] == [(0.0, 20)]


def test_someone_elses_stopped_process_stays_skipped_behind_our_own():
    sim = Sim().add(distinct(10, rss_mb=50), distinct(20, rss_mb=40, state="T"), distinct(30, rss_mb=10))
    sim.run(0.0, 2.0, HIGH)
    assert sim.stops() == [(0.0, "pid:10"), (1.0, "pid:30")]


def test_a_blocked_resume_is_reported_again_in_a_new_holding_spell():
    sim = Sim(available_mb=10).add(distinct(10, swap_mb=10))
    sim.step(0.0, HIGH)
    sim.run(0.1, 4.0, CALM)  # calm from 0.1: headroom checked at 2.1, 3.1: reported once
    sim.step(4.0, HIGH)  # the spell ends (nothing more to stop)
    sim.run(4.1, 7.0, CALM)
    blocked = [(t, e.pid, e.comm, dict(e.extra)["need_kb"]) for t, e in sim.emitted("skip")
               if e.reason == "resume-blocked:headroom"]
    assert blocked == [(2.1, 10, "p10", 74 * MB), (6.1, 10, "p10", 74 * MB)]


# == time rules at their boundaries ==============================================================


def test_within_the_grace_avg10_at_exactly_stop_above_is_sustained_pressure():
    sim = Sim().add(distinct(10))
    sim.step(0.0, HIGH)
    sim.run(0.1, 2.2, CALM)
    sim.step(3.0, 60, avg10=20)
    assert sim.stops()[-1] == (3.0, "pid:10")


def test_held_units_are_rescanned_every_rescan_interval_not_every_tick():
    sim = Sim().add(distinct(10))
    sim.step(0.0, HIGH)
    sim.run(0.1, 6.0, BETWEEN)
    assert sim.scans == 3, "the stop's scan, then rescans at 2.0 and 4.0"


def test_max_stopped_counts_from_the_stop_and_a_failed_resume_is_retried_a_stop_interval_later():
    sim = Sim(rules=replace(RULES, max_stopped=3.0), fail_resume={10}).add(distinct(10))
    sim.run(0.0, 1.0, BETWEEN, dt=0.5)
    sim.run(1.0, 5.5, HIGH, dt=0.5)
    assert sim.stops()[0] == (1.0, "pid:10")
    assert [(t, r) for t, _, r in sim.resumes()] == [(4.0, "max-stopped"), (5.0, "max-stopped")]


# == failed resumes and their retries ============================================================


def test_no_reading_retries_a_failed_resume_not_before_its_time():
    sim = Sim(fail_resume={10}).add(distinct(10))
    sim.step(0.0, HIGH)
    sim.step(0.5, CALM)
    sim.step(2.5, CALM)  # calm for --hold: the resume fails, retry at 3.5
    sim.fail_resume.clear()
    sim.step(3.0, None)
    sim.step(3.5, None)
    assert [(t, r) for t, _, r in sim.resumes()] == [(2.5, "calm"), (3.5, "no-reading")]


def test_a_unit_awaiting_its_retry_does_not_hold_back_the_others():
    sim = Sim(fail_resume={11}).add(distinct(10, rss_mb=20), distinct(11))
    sim.run(0.0, 1.5, HIGH)  # 10 then 11 stopped
    sim.step(1.5, CALM)
    sim.step(3.5, CALM)  # 11's resume fails: retry at 4.5
    sim.step(4.0, None)  # no reading: 10 goes, 11 waits for its retry
    assert sim.resumes() == [(3.5, "pid:11", "calm"), (4.0, "pid:10", "no-reading")]
    assert [h.unit.key for h in sim.state.held] == ["pid:11"]


def test_an_older_unit_is_resumed_while_the_last_stopped_awaits_its_retry():
    sim = Sim().add(distinct(10, state="T"), distinct(11, state="T"))
    sim.state = CoreState(phase=DaemonState.HOLDING, held=(held_unit(10), held_unit(11, retry_at=100.0)))
    sim.run(0.0, 2.1, CALM)
    assert sim.resumes() == [(2.0, "pid:10", "calm")]


def test_a_failed_resume_keeps_only_the_members_that_failed_at_its_place():
    sim = Sim(fail_resume={11}, groups={10: (10, 11)}).add(distinct(10, pgid=10, rss_mb=50), distinct(11, pgid=10),
                                                          distinct(20, rss_mb=10))
    sim.run(0.0, 1.5, HIGH)  # the group, then pid 20
    sim.step(1.5, CALM)
    sim.run(3.5, 5.0, CALM, dt=0.5)  # 20 resumed at 3.5; the group at 4.5, where 11 fails
    assert [k for _, k, _ in sim.resumes()] == ["pid:20", "pgid:10"]
    (record,) = sim.state.held
    assert record.unit.key == "pgid:10" and record.unit.pids == [11] and record.retry_at == 5.5


def test_settle_ignores_a_stop_it_does_not_hold_and_records_newcomers():
    state = CoreState(held=(held_unit(10),))
    assert settle(state, RULES, StopOutcome("pid:99", (Member(99, 990, "x"),))) is state
    grown = settle(state, RULES, StopOutcome("pid:10", (Member(10, 100, "p10"), Member(12, 120, "new"))))
    assert grown.held[0].unit.pids == [10, 12] and grown.held[0].since == 1000.0
    resume = Resume(held_unit(10), 0, "calm")
    assert settle(state, RULES, ResumeOutcome(resume, (), 3.0)) is state


# == held units between decisions: members that leave or join ====================================


def test_a_held_group_follows_its_members_and_is_dropped_when_all_are_gone():
    sim = Sim(groups={10: (10, 11)}).add(distinct(10, pgid=10), distinct(11, pgid=10))
    sim.step(0.0, HIGH)
    del sim.procs[11]
    sim.groups = {}
    sim.run(0.1, 2.1, BETWEEN)  # the rescan at 2.0 sees 11 gone
    assert [h.unit.pids for h in sim.state.held] == [[10]]
    assert not [a for _, a in sim.log if isinstance(a, Drop)]
    sim.run(2.1, 5.0, CALM)
    assert [a.held.unit.pids for _, a in sim.log if isinstance(a, Resume)] == [[10]]


def test_one_rescan_drops_the_gone_and_resumes_every_reclassified_unit():
    sim = Sim().add(distinct(10, rss_mb=40), distinct(11, rss_mb=30), distinct(12, rss_mb=20), distinct(13))
    sim.run(0.0, 4.0, HIGH)  # stops at 0, 1, 2, 3
    assert [k for _, k in sim.stops()] == ["pid:10", "pid:11", "pid:12", "pid:13"]
    del sim.procs[10]
    sim.procs[11] = replace(spared(11, "protected:dependent"), state="T")
    sim.procs[13] = replace(spared(13, "never-stop:comm"), state="T")
    sim.step(4.0, BETWEEN)  # last scan at 3.0: not yet
    sim.step(5.0, BETWEEN)
    assert [(t, type(a).__name__, a.held.unit.key, getattr(a, "reason", None)) for t, a in sim.log
            if isinstance(a, (Drop, Resume))] == [
        (5.0, "Drop", "pid:10", None), (5.0, "Resume", "pid:11", "reclassified:protected:dependent"),
        (5.0, "Resume", "pid:13", "reclassified:never-stop:comm")]
    assert [h.unit.key for h in sim.state.held] == ["pid:12"]


def test_a_frozen_cgroup_takes_in_whatever_joins_it():
    # (A colon in a cgroup's name is allowed: the unit key splits at the first one.)
    sim = Sim(rules=replace(RULES, method=FreezeMethod.CGROUP), cgroups={"/app:1": (10,)})
    sim.add(distinct(10, rss_mb=50, cgroup="/app:1"), distinct(11, cgroup="/w2"))
    sim.step(0.0, HIGH)
    ((_, stop),) = [(t, a) for t, a in sim.log if isinstance(a, Stop)]
    assert (stop.unit.key, stop.unit.kind, stop.unit.cgroup_dir) == ("cgroup:/app:1", UnitKind.CGROUP, "/sys/fs/cgroup/app:1")
    # A process forked inside the frozen cgroup (frozen too, out of scope here): a member now.
    sim.procs[12] = Proc(12, 120, "p12", OUT_OF_SCOPE)
    sim.cgroups["/app:1"] = (10, 12)
    sim.run(0.1, 2.1, BETWEEN)
    assert [h.unit.pids for h in sim.state.held] == [[10, 12]]
    # The cgroup's facts missing from a scan (it could not be read): its known members stay.
    del sim.cgroups["/app:1"]
    sim.run(2.1, 4.1, BETWEEN)
    assert [h.unit.pids for h in sim.state.held] == [[10, 12]]
    sim.run(4.1, 7.0, CALM)
    assert [(a.held.unit.key, a.held.unit.pids) for _, a in sim.log if isinstance(a, Resume)] == [("cgroup:/app:1", [10, 12])]


# == the rules' record (the `start` event, replay) ===============================================


def test_rules_come_from_the_config_and_survive_their_record():
    config = DaemonConfig(thresholds=Thresholds(stop_above=30, resume_below=3, hold=4), stop_interval=0.5,
                          resume_headroom=1.5, resume_reserve_kb=1234, resume_grace=7, max_stopped=60,
                          rescan_interval=3, method=FreezeMethod.CGROUP)
    rules = Rules.of(config)
    assert rules == Rules(thresholds=config.thresholds, stop_interval=0.5, resume_headroom=1.5, resume_reserve_kb=1234,
                          resume_grace=7, max_stopped=60, rescan_interval=3, method=FreezeMethod.CGROUP)
    record = rules.to_dict()
    assert record == {"thresholds": {"stop_above": 30, "resume_below": 3, "hold": 4}, "stop_interval": 0.5,
                      "resume_headroom": 1.5, "resume_reserve_kb": 1234, "resume_grace": 7, "max_stopped": 60,
                      "rescan_interval": 3, "method": "cgroup"}
    assert Rules.from_dict(record) == rules
    assert Rules.from_dict({**record, "unknown": 1}) == rules, "a newer daemon's extra rule is ignored"
    assert Rules.from_dict({"stop_interval": 2.0}) == Rules(stop_interval=2.0), "missing ones take their defaults"


def test_the_method_rule_reaches_planning():
    sim = Sim(rules=replace(RULES, method=FreezeMethod.CGROUP), cgroups={"/w1": (10,)}).add(distinct(10, cgroup="/w1"))
    sim.step(0.0, HIGH)
    ((_, stop),) = [(t, a) for t, a in sim.log if isinstance(a, Stop)]
    assert (stop.unit.key, stop.unit.method) == ("cgroup:/w1", FreezeMethod.CGROUP)
