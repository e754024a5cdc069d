"""Balloon policies as pure functions, fed recorded guest-statistics sequences (no VM).

The sequences below are what the ledger of a run holds for a guest (balloon `actual`, the
balloon's MemFree) and for the budget cgroup (free = budget - usage + page cache), turned
into the policy's inputs by `recorded()`.
"""

import pytest

from harness.policy.base import GuestStats, GuestView, HostSample, PolicyInput
from harness.policy.mom import MomPolicy, MomRules
from harness.policy.schedule import SchedulePolicy, Step, scheduled_target


def recorded(rows: list[tuple[float, float]]) -> tuple[GuestStats, ...]:
    """(actual MiB, MemFree MiB) every 0.5 s, as the ledger's stats columns record them."""
    return tuple(GuestStats(t=i * 0.5, actual_mib=a, free_mib=f) for i, (a, f) in enumerate(rows))


def host(free_share: float, n: int = 10, total: float = 1000.0) -> tuple[HostSample, ...]:
    return tuple(HostSample(t=i * 0.5, total_mib=total, free_mib=free_share * total) for i in range(n))


def guest(name: str, rows, max_mib=1024.0, min_mib=256.0, alive=True) -> GuestView:
    return GuestView(name, max_mib, min_mib, None, recorded(rows), alive)


def decide(policy, host_samples, *guests):
    return {a.vm: a for a in policy.decide(PolicyInput(10.0, host_samples, guests))}


# An idle guest at full size with most of its memory free, and a busy one with almost none.
IDLE = [(1024.0, 700.0)] * 10
BUSY = [(800.0, 20.0)] * 10


def test_under_pressure_the_idle_guest_shrinks_by_exactly_five_percent():
    actions = decide(MomPolicy(), host(0.10), guest("idle", IDLE))
    # used = 1024 - 700 = 324; wanted free share = 0.20 * 0.10 / 0.20 = 0.10;
    # floor = 324 + 0.10 * 1024 = 426.4 < 0.95 * 1024 = 972.8: the 5 % step bounds it.
    assert actions["idle"].target_mib == pytest.approx(972.8)
    assert "shrink" in actions["idle"].reason


def test_under_pressure_a_busy_guest_is_not_shrunk_below_used_plus_its_free_share():
    actions = decide(MomPolicy(), host(0.10), guest("busy", BUSY))
    # used = 780; floor = 780 + 0.10 * 800 = 860 > 800 (actual): MOM never grows under pressure.
    assert "busy" not in actions


def test_a_shrink_stops_at_used_plus_free_share_when_that_is_above_the_five_percent_step():
    rows = [(1000.0, 100.0)] * 10  # used 900
    actions = decide(MomPolicy(), host(0.19), guest("g", rows))
    floor = 900 + (0.20 * 0.19 / 0.20) * 1000  # 1090 > actual: nothing to do
    assert floor > 1000 and "g" not in actions
    rows = [(1000.0, 140.0)] * 10  # used 860, wanted free 0.05 at host share 0.05...
    actions = decide(MomPolicy(), host(0.06), guest("g", rows))
    # wanted = 0.20 * 0.06 / 0.20 = 0.06 -> floor = 860 + 60 = 920 > 950? no: 920 < 950 -> step bound
    assert actions["g"].target_mib == pytest.approx(950.0)
    rows = [(1000.0, 100.0)] * 10  # used 900: floor 900 + 60 = 960 > 950: the floor bounds it
    actions = decide(MomPolicy(), host(0.06), guest("g", rows))
    assert actions["g"].target_mib == pytest.approx(960.0)
    assert "used + free share" in actions["g"].reason


def test_critical_pressure_pushes_the_guest_below_its_used_memory():
    rows = [(1000.0, 10.0)] * 10  # used 990
    actions = decide(MomPolicy(), host(0.03), guest("g", rows))
    # critical: wanted = 0.03 - 0.05 = -0.02 -> floor = 990 - 20 = 970 (< used: guest must swap)
    assert actions["g"].target_mib == pytest.approx(970.0)


def test_balloon_min_bounds_every_shrink():
    rows = [(300.0, 290.0)] * 10  # nearly empty guest
    actions = decide(MomPolicy(), host(0.10), guest("g", rows, min_mib=290.0))
    assert actions["g"].target_mib == pytest.approx(290.0)  # not 0.95 * 300 = 285
    rows = [(290.0, 280.0)] * 10
    assert "g" not in decide(MomPolicy(), host(0.10), guest("g", rows, min_mib=290.0))


def test_without_pressure_a_ballooned_guest_grows_five_percent_or_to_used_plus_twenty_percent():
    actions = decide(MomPolicy(), host(0.50), guest("idle", [(600.0, 400.0)] * 10))
    assert actions["idle"].target_mib == pytest.approx(630.0)  # 5 %: used 200 + 120 is lower
    actions = decide(MomPolicy(), host(0.50), guest("busy", [(600.0, 10.0)] * 10))
    # used 590 + 0.20 * 600 = 710 > 630: MOM grows past 5 % in one decision (not bounded).
    assert actions["busy"].target_mib == pytest.approx(710.0)


def test_growth_stops_at_the_vm_size():
    actions = decide(MomPolicy(), host(0.50), guest("g", [(1000.0, 10.0)] * 10, max_mib=1024.0))
    assert actions["g"].target_mib == pytest.approx(1024.0)
    assert "g" not in decide(MomPolicy(), host(0.50), guest("g", [(1024.0, 10.0)] * 10, max_mib=1024.0))


def test_changes_under_a_quarter_percent_are_skipped():
    # 0.95 * actual is far; but with max_change 0.002 the step is under min_change 0.0025.
    policy = MomPolicy(MomRules(max_change=0.002))
    assert decide(policy, host(0.10), guest("idle", IDLE)) == {}
    policy = MomPolicy(MomRules(max_change=0.003))
    assert decide(policy, host(0.10), guest("idle", IDLE))["idle"].target_mib == pytest.approx(1024 * 0.997, abs=0.1)


def test_the_threshold_itself_is_not_pressure():
    actions = decide(MomPolicy(), host(0.20), guest("g", [(600.0, 400.0)] * 10))
    assert "grow" in actions["g"].reason


def test_statistics_are_averaged_over_the_history():
    # The last 10 samples count: 5 old ones with much free memory are outside the window.
    rows = [(1000.0, 900.0)] * 5 + [(1000.0, 100.0)] * 10
    view = guest("g", rows)
    actions = decide(MomPolicy(), host(0.06), view)
    assert actions["g"].target_mib == pytest.approx(960.0)  # used 900, as the last 10 say
    half = MomPolicy(MomRules(history=20))  # the 15 samples average MemFree to 366.7
    assert decide(half, host(0.06), view)["g"].target_mib == pytest.approx(950.0)


def test_host_share_is_averaged_too():
    samples = host(0.50, n=5) + host(0.05, n=5)  # 0.275 on average: no pressure
    actions = decide(MomPolicy(), samples, guest("g", [(600.0, 400.0)] * 10))
    assert "grow" in actions["g"].reason


def test_guests_without_statistics_or_dead_ones_are_left_alone():
    no_stats = GuestView("quiet", 1024, 256, None, (GuestStats(0, 1024.0, None),), True)
    dead = guest("dead", IDLE, alive=False)
    assert decide(MomPolicy(), host(0.10), no_stats, dead) == {}
    assert MomPolicy().decide(PolicyInput(0, (), (guest("g", IDLE),))) == []  # no host sample yet


def test_memory_moves_from_the_idle_guest_to_the_busy_one_over_a_recorded_sequence():
    """Closed loop on the decision alone: the guests follow their targets at once; the host's
    free share is what the two use of a 1600 MiB budget."""
    policy = MomPolicy(MomRules(history=1))
    idle, busy = 1024.0, 512.0
    idle_used, busy_used = 200.0, 480.0
    budget = 1600.0
    for step in range(60):
        busy_used = min(900.0, busy_used + 15)  # the busy guest's working set grows
        usage = min(idle, idle_used + 600.0) + busy  # the idle guest's free pages stay resident
        hs = (HostSample(step, budget, budget - usage),)
        views = (GuestView("idle", 1024, 256, idle, (GuestStats(step, idle, idle - idle_used),)),
                 GuestView("busy", 1024, 256, busy, (GuestStats(step, busy, max(0.0, busy - busy_used)),)))
        for action in policy.decide(PolicyInput(step, hs, views)):
            if action.vm == "idle":
                idle = action.target_mib
            else:
                busy = action.target_mib
    assert idle < 1024 * 0.9, idle
    assert busy > 512 * 1.3, busy


def test_schedule_ramps_in_steps_of_its_interval():
    steps = (Step(12, 640, 4), Step(40, 1024, 2))
    targets = [round(scheduled_target(1024, steps, t)[0]) for t in (11, 12, 13, 14, 15, 16, 30, 41, 42)]
    assert targets == [1024, 1024, 928, 832, 736, 640, 640, 832, 1024]
    # Decisions that fall between the steps see the same targets (no 927.3, 831.1, ...).
    late = [round(scheduled_target(1024, steps, t + 0.37)[0], 3) for t in (12, 13, 14, 15)]
    assert late == [1024, 928, 832, 736]
    assert scheduled_target(1024, (Step(0, 512, 4),), 3.99, interval_s=2.0)[0] == 768
    policy = SchedulePolicy({"vm": steps}, {"vm": 1024.0}, interval_s=1.0)
    seen = []
    current = None
    for t in range(0, 45):
        view = GuestView("vm", 1024, 256, current, (), True)
        for action in policy.decide(PolicyInput(float(t), (), (view,))):
            current = action.target_mib
            seen.append(current)
    assert seen == [928.0, 832.0, 736.0, 640.0, 832.0, 1024.0]


def test_schedule_leaves_guests_without_steps_alone():
    policy = SchedulePolicy({"a": (Step(0, 512),)}, {"a": 1024.0, "b": 1024.0})
    views = (GuestView("a", 1024, 256, None, ()), GuestView("b", 1024, 256, None, ()))
    assert [a.vm for a in policy.decide(PolicyInput(1.0, (), views))] == ["a"]


def test_the_readme_example_policy_works():
    """The README's "write your own policy" example, run as written."""
    import re
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "class KeepHalfFree" in b)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    namespace["test_keep_half_free"]()
