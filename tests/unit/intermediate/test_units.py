"""Sharper decisions (issue 12), on synthetic traces: a workload's leaf cgroup is one unit with
either method, a unit too small to relieve anything waits while a big one is stopped, a resume
that waits says why (repeatedly, rate-limited) and a resume says why it happened at last, and a
stop carries the page-out decision. No process, no clock, no sleep."""

from __future__ import annotations

from dataclasses import replace

from test_core import CALM, HIGH, MB, RULES, Sim, distinct, spared

from harness.guest.intermediate.config import FreezeMethod
from harness.guest.intermediate.core import Resume, Stop
from harness.guest.intermediate.snapshot import CgroupFacts, Scan

WORKLOAD = "/bhworkloads.slice/bh-wl-stress.service"
NEW_RULES = replace(RULES, min_rss_kb=16 * MB, page_out=True, blocked_report_interval=5.0)


def with_cgroups(sim: Sim, *facts: CgroupFacts) -> Sim:
    sim._scan = lambda: Scan(procs=tuple(sim.procs[p] for p in sorted(sim.procs)), cgroups=facts)
    return sim


def stress_ng(sim: Sim, *extra: int) -> Sim:
    """The shape of the stress-ng workload: a Python wrapper (7 MB), stress-ng (5 MB) and its
    296 MB worker, each in a process group of its own, all in the workload's service cgroup."""
    sim.add(distinct(10, rss_mb=7, pgid=10, cgroup=WORKLOAD), distinct(11, rss_mb=5, pgid=11, cgroup=WORKLOAD),
            distinct(12, rss_mb=296, pgid=12, cgroup=WORKLOAD))
    return with_cgroups(sim, CgroupFacts(WORKLOAD, "/sys/fs/cgroup" + WORKLOAD, None, (10, 11, 12, *extra)))


def test_a_workloads_leaf_cgroup_is_one_unit_with_signals_too():
    for method in FreezeMethod:
        sim = stress_ng(Sim(rules=replace(NEW_RULES, method=method)))
        sim.run(0.0, 3.0, HIGH)
        (stop,) = [a for _, a in sim.log if isinstance(a, Stop)]
        unit = stop.unit
        assert unit.key == f"cgroup:{WORKLOAD}" and unit.method is method and unit.pids == [10, 11, 12]
        assert unit.rss_kb == 308 * MB and unit.cgroup_dir == "/sys/fs/cgroup" + WORKLOAD
        assert sim.skips("nothing-to-stop"), "nothing else left to stop: the whole workload is held"
        sim.run(3.0, 6.0, CALM)
        assert [(k, r) for _, k, r in sim.resumes()] == [(f"cgroup:{WORKLOAD}", "calm")], "resumed as one unit"


def test_a_cgroup_shared_with_a_process_that_is_not_a_candidate_is_no_unit():
    # A protected (or out-of-scope) process in the cgroup: the candidates go one by one, as
    # before -- largest first, with no fallback note (that note is about --method cgroup).
    sim = stress_ng(Sim(rules=NEW_RULES), 99)
    sim.add(spared(99))
    sim.step(0.0, HIGH)
    (stop,) = [a for _, a in sim.log if isinstance(a, Stop)]
    assert stop.unit.key == "pid:12" and stop.unit.note is None


def test_a_small_unit_waits_while_a_big_one_is_stopped():
    # The stress-ng run of issue 12, had its processes been separate units: after the 296 MB
    # worker, a 7 MB process was stopped too, which freed nothing.
    sim = Sim(rules=NEW_RULES).add(distinct(12, rss_mb=296, pgid=12), distinct(10, rss_mb=7, pgid=10))
    sim.run(0.0, 4.0, HIGH)
    assert sim.stops() == [(0.0, "pid:12")]
    (small,) = sim.skips("too-small")
    assert small[:2] == (1.0, 10), "reported once per episode, at the first stop it was spared"
    (event,) = [a for _, a in sim.emitted("skip") if a.reason == "too-small"]
    assert dict(event.extra) == {"unit": "pid:10", "rss_kb": 7 * MB, "min_rss_kb": 16 * MB}
    # Once the big unit is resumed and pressure comes back, the small one is still not stopped
    # alone while the big one is a candidate: the big one goes first again.
    sim.run(4.0, 8.0, CALM)
    sim.run(8.0, 10.0, HIGH)
    assert [k for _, k in sim.stops()] == ["pid:12", "pid:12"]


def test_when_every_unit_is_small_the_largest_goes_and_min_rss_0_disables_the_rule():
    sim = Sim(rules=NEW_RULES).add(distinct(10, rss_mb=7), distinct(11, rss_mb=9))
    sim.run(0.0, 3.0, HIGH)
    assert [k for _, k in sim.stops()] == ["pid:11", "pid:10"], "no big unit anywhere: small ones are all there is"
    sim = Sim(rules=replace(NEW_RULES, min_rss_kb=0)).add(distinct(12, rss_mb=296), distinct(10, rss_mb=7))
    sim.run(0.0, 3.0, HIGH)
    assert [k for _, k in sim.stops()] == ["pid:12", "pid:10"] and sim.skips("too-small") == []


def test_a_blocked_resume_is_reported_each_interval_with_its_figures_and_the_resume_says_why():
    sim = Sim(rules=NEW_RULES, available_mb=100).add(distinct(10, rss_mb=300, swap_mb=290))
    sim.step(0.0, HIGH)
    sim.run(0.1, 14.0, CALM)  # hold done at 2.1; the gate refuses at every stop interval
    blocked = [(t, dict(a.extra)) for t, a in sim.emitted("skip") if a.reason == "resume-blocked:headroom"]
    assert [t for t, _ in blocked] == [2.1, 7.1, 12.1], "at once, then every blocked_report_interval"
    assert blocked[0][1] == {"unit": "pid:10", "need_kb": 354 * MB, "available_kb": 100 * MB}
    assert blocked[1][1]["waiting_s"] == 5.0 and blocked[2][1]["waiting_s"] == 10.0
    sim.available_mb = 400  # the balloon deflated
    sim.run(14.0, 15.5, CALM)
    (resume,) = [a for _, a in sim.log if isinstance(a, Resume)]
    assert resume.reason == "calm"
    assert dict(resume.detail) == {"calm_for_s": 14.0, "held_for_s": 14.1, "need_kb": 354 * MB,
                                   "available_kb": 400 * MB, "blocked_for_s": 12.0}


def test_a_resume_waiting_for_the_lagging_average_says_so():
    # The memory is back and nothing stalls (fast 0), but avg10 decays for ~20 s: not calm yet.
    sim = Sim(rules=NEW_RULES).add(distinct(10, rss_mb=300))
    sim.step(0.0, HIGH)
    sim.run(0.1, 12.0, 0.0, avg10=12.0)
    waits = [(t, dict(a.extra)) for t, a in sim.emitted("skip") if a.reason == "resume-blocked:pressure"]
    assert [t for t, _ in waits] == [0.1, 5.1, 10.1]
    assert waits[0][1] == {"unit": "pid:10", "some_avg10": 12.0, "some_fast": 0.0, "resume_below": 5.0}
    assert waits[2][1]["waiting_s"] == 10.0
    sim.run(12.0, 14.5, CALM)
    assert sim.resumes() == [(14.0, "pid:10", "calm")]
    assert len(sim.skips("resume-blocked:pressure")) == 3, "calm: no more waiting reports"


def test_rules_of_older_logs_report_a_blocked_resume_once_and_never_the_pressure_wait():
    sim = Sim(rules=replace(NEW_RULES, blocked_report_interval=None), available_mb=100).add(distinct(10, swap_mb=290))
    sim.step(0.0, HIGH)
    sim.run(0.1, 3.0, 0.0, avg10=12.0)
    sim.run(3.0, 20.0, CALM)
    assert [t for t, _, _ in sim.skips("resume-blocked:headroom")] == [5.0]
    assert sim.skips("resume-blocked:pressure") == []


def test_the_stop_carries_the_page_out_decision():
    for page_out in (True, False):
        sim = Sim(rules=replace(NEW_RULES, page_out=page_out)).add(distinct(10, rss_mb=300))
        sim.step(0.0, HIGH)
        (stop,) = [a for _, a in sim.log if isinstance(a, Stop)]
        assert stop.page_out is page_out


def test_a_process_that_only_opted_out_of_the_oom_killer_stops_with_its_workload():
    # The real stress-ng workload: its parent and the vm stressor's parent set oom_score_adj
    # -1000 (never stopped alone). Left running, stress-ng's timer killed the stopped worker.
    sim = Sim(rules=NEW_RULES)
    sim.add(distinct(10, rss_mb=12, pgid=10, cgroup=WORKLOAD), spared(11, "never-stop:oom-score-adj"),
            spared(12, "never-stop:oom-score-adj"), distinct(13, rss_mb=270, pgid=10, cgroup=WORKLOAD))
    with_cgroups(sim, CgroupFacts(WORKLOAD, "/sys/fs/cgroup" + WORKLOAD, None, (10, 11, 12, 13)))
    sim.run(0.0, 5.0, HIGH)
    (stop,) = [a for _, a in sim.log if isinstance(a, Stop)]
    assert stop.unit.key == f"cgroup:{WORKLOAD}" and stop.unit.pids == [10, 11, 12, 13]
    assert not [s for s in sim.skips() if s[1] in (11, 12)], "not reported spared: they are stopped"
    sim.run(5.0, 7.0, 12)  # between: rescans (every 2 s) must not resume them as "reclassified"
    assert sim.resumes() == [] and [h.unit.key for h in sim.state.held] == [f"cgroup:{WORKLOAD}"]
    sim.run(7.0, 10.0, CALM)
    assert [(k, r) for _, k, r in sim.resumes()] == [(f"cgroup:{WORKLOAD}", "calm")]


def test_an_oom_exempt_process_is_never_stopped_without_a_distinct_workload_around_it():
    alone = "/system.slice/db.service"
    sim = Sim(rules=NEW_RULES).add(spared(20, "never-stop:oom-score-adj"), distinct(21, rss_mb=100, cgroup="/w"))
    with_cgroups(sim, CgroupFacts(alone, "/sys/fs/cgroup" + alone, None, (20,)),
                 CgroupFacts("/w", "/sys/fs/cgroup/w", None, (21, 22)))
    sim.add(spared(22, "protected:core"))  # shares /w with the distinct process
    sim.run(0.0, 3.0, HIGH)
    assert sim.stops() == [(0.0, "pid:21")], "only the distinct process, alone"
    assert (0.0, 20, "never-stop:oom-score-adj") in sim.skips()
