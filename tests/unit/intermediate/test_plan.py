"""Stop units planned from a scan (plan.py): pure, no process, no sleep. Whole StopUnit values are
compared, so that every field a stop event, the state file and the freezer use is checked."""

from __future__ import annotations

import pytest

from harness.guest.intermediate.config import FreezeMethod
from harness.guest.intermediate.plan import cgroup_why_not, plan_units
from harness.guest.intermediate.snapshot import CgroupFacts, Proc, Scan
from harness.guest.intermediate.units import Member, StopUnit, UnitKind

SIGNAL, CGROUP = FreezeMethod.SIGNAL, FreezeMethod.CGROUP


def proc(pid: int, rss_kb: int = 1000, swap_kb: int = 0, pgid: int | None = None, cgroup: str | None = "/w",
         reason: str = "distinct") -> Proc:
    return Proc(pid, pid * 10, f"p{pid}", reason, rss_kb, swap_kb, pgid if pgid is not None else pid, "S", cgroup)


def member(pid: int) -> Member:
    return Member(pid, pid * 10, f"p{pid}")


def facts(path: str, *pids: int, why_not: str | None = None, dir: str | None = "default") -> CgroupFacts:
    return CgroupFacts(path, f"/sys/fs/cgroup{path}" if dir == "default" else dir, why_not, pids)


def test_a_process_group_is_one_unit_leader_first_with_the_sum_of_its_memory():
    scan = Scan(procs=(proc(10, 100, 1, pgid=12), proc(11, 200, 2, pgid=12), proc(12, 400, 4, pgid=12)),
                groups=((12, (10, 11, 12)),))
    assert plan_units(scan, SIGNAL) == [
        StopUnit(UnitKind.PROCESS_GROUP, "pgid:12", (member(12), member(10), member(11)), SIGNAL, rss_kb=700, swap_kb=7)]


def test_single_processes_and_groups_are_all_planned_largest_first():
    scan = Scan(procs=(proc(10, 100, 5, pgid=10), proc(11, 900, 6, pgid=10), proc(20, 500, 7), proc(30, 700, 8)),
                groups=((10, (10, 11)),))
    assert plan_units(scan, SIGNAL) == [
        StopUnit(UnitKind.PROCESS_GROUP, "pgid:10", (member(10), member(11)), SIGNAL, rss_kb=1000, swap_kb=11),
        StopUnit(UnitKind.PROCESS, "pid:30", (member(30),), SIGNAL, rss_kb=700, swap_kb=8),
        StopUnit(UnitKind.PROCESS, "pid:20", (member(20),), SIGNAL, rss_kb=500, swap_kb=7)]


def test_a_group_with_a_member_that_is_not_a_candidate_goes_process_by_process():
    scan = Scan(procs=(proc(10, pgid=10), proc(11, pgid=10), proc(12, pgid=10, reason="protected:core")),
                groups=((10, (10, 11, 12)),))
    assert [u.key for u in plan_units(scan, SIGNAL)] == ["pid:10", "pid:11"]
    assert [u.key for u in plan_units(scan, SIGNAL, excluded={11})] == ["pid:10"], "excluded: held or skipped"


def test_a_group_of_one_is_a_process():
    scan = Scan(procs=(proc(10, pgid=10),), groups=((10, (10,)),))
    assert [(u.kind, u.key) for u in plan_units(scan, SIGNAL)] == [(UnitKind.PROCESS, "pid:10")]


def test_a_freezable_leaf_cgroup_is_one_unit_and_its_processes_are_not_planned_again():
    scan = Scan(procs=(proc(10, 300, 3, cgroup="/a"), proc(11, 100, 1, cgroup="/a"), proc(20, 50, 5, cgroup="/b")),
                cgroups=(facts("/a", 10, 11), facts("/b", 20, why_not="cgroup-not-leaf")))
    assert plan_units(scan, CGROUP) == [
        StopUnit(UnitKind.CGROUP, "cgroup:/a", (member(10), member(11)), CGROUP, cgroup_dir="/sys/fs/cgroup/a",
                 rss_kb=400, swap_kb=4),
        StopUnit(UnitKind.PROCESS, "pid:20", (member(20),), SIGNAL, rss_kb=50, swap_kb=5, note="cgroup-not-leaf")]


def test_a_cgroup_that_cannot_be_frozen_does_not_keep_the_next_one_from_being_a_unit():
    scan = Scan(procs=(proc(10, 100, cgroup="/a"), proc(20, 200, cgroup="/b")),
                cgroups=(facts("/a", 10, 99), facts("/b", 20)))
    assert [(u.key, u.method, u.note) for u in plan_units(scan, CGROUP)] == [
        ("cgroup:/b", CGROUP, None), ("pid:10", SIGNAL, "cgroup-shared")]


def test_a_group_whose_members_fell_back_says_why_each_did():
    scan = Scan(procs=(proc(10, pgid=10, cgroup="/"), proc(11, pgid=10, cgroup="/a")), groups=((10, (10, 11)),),
                cgroups=(facts("/a", 11, 99),))
    (unit,) = plan_units(scan, CGROUP)
    assert (unit.key, unit.method, unit.note) == ("pgid:10", SIGNAL, "cgroup-root,cgroup-shared")
    assert plan_units(scan, SIGNAL)[0].note is None, "no cgroup method, nothing to explain"


@pytest.mark.parametrize("cgroup, found, why", [
    (None, (), "cgroup-root"),
    ("/", (facts("/", 10),), "cgroup-root"),
    ("/a", (), "cgroup-freeze-unavailable"),
    ("/a", (facts("/a", 10, dir=None),), "cgroup-freeze-unavailable"),
    ("/a", (facts("/a", 10, why_not="cgroup-not-leaf"),), "cgroup-not-leaf"),
    ("/a", (facts("/a"),), "cgroup-shared"),  # cgroup.procs unreadable or empty
    ("/a", (facts("/a", 10, 11),), "cgroup-shared"),  # 11 is not a candidate
    ("/a", (facts("/a", 10),), None),
])
def test_why_a_cgroup_cannot_be_frozen_as_a_unit(cgroup, found, why):
    assert cgroup_why_not(Scan(procs=(proc(10, cgroup=cgroup),), cgroups=found), cgroup, {10}) == why
