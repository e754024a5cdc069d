"""The scenario report's pure rules: each expectation passes on a good figure, fails on a bad
one and fails when its figure is missing; a scenario without expectations checks nothing (and
says so); the verdict's directions and slack; the one-run table's cells."""

import copy

import pytest
from rich.console import Console

from harness.scenario.model import parse_scenario
from harness.scenario.report import check_expectations
from harness.scenario.table import Outcome, judge, summary_table, verdict

SCENARIO = """
[scenario]
name = "x"
[[workloads]]
name = "svc"
kind = "protected"
role = "protected"
[[balloon]]
at_s = 1
target_mib = 640
[expect]
{expect}
"""


def scenario(expect: str = ""):
    return parse_scenario(SCENARIO.format(expect=expect), "x.toml")


def summary(**changes) -> dict:
    """A good run's summary: every figure present and fine."""
    s = {
        "scenario": "x", "variant": "off", "label": "balloon only", "policy": "schedule", "complete": True,
        "swap": "file:1024", "protected_completed": True, "protected_items_per_s": 100.0,
        "oom_kills": 0, "oom_victims": [], "oom_kills_unmeasured": [],
        "left_stopped": [], "left_stopped_unmeasured": [], "protected_stops": [],
        "balloon_steps": [{"vm": "vm", "target_mib": 640, "reached": True, "closest_mib": 641.0}],
        "balloon_target_mib": 640, "balloon_reached": True, "balloon_seconds_to_target": 10.0,
        "balloon_closest_mib": 641.0, "psi_full_stall_s": 5.0, "psi_some_stall_s": 9.0,
        "stops": 0, "resumes": 0, "longest_stopped_s": 0.0, "longest_stopped_comm": None,
        "ssh_longest_silence_s": 2.0,
        "host": {"budget_mib": 1600, "host_swap": "none", "peak_usage_mib": 1500.0, "budget_held": True,
                 "host_swap_peak_mib": None, "host_oom_kills": 0, "killed_vms": [], "time_over_budget_s": 3.0,
                 "qemu_swap_peak_mib": 0.0, "limit_hits": None},
        "guests": {"vm": {"balloon_min_mib": 640.0, "balloon_final_mib": 1024.0, "died": None}},
    }
    return changed(s, changes)


def changed(s: dict, changes: dict) -> dict:
    """`s` with `changes` applied; a key host_X changes the host's X."""
    for key, value in changes.items():
        if key.startswith("host_"):
            s["host"][key.removeprefix("host_")] = value
        else:
            s[key] = value
    return s


def results(expect: str, **changes) -> dict[str, tuple[bool, str]]:
    return {r.name: (r.passed, r.detail) for r in check_expectations(scenario(expect), summary(**changes))}


CASES = [
    # (expectation, bad figures, detail of the bad case)
    ("protected_completes = true", {"protected_completed": False}, "protected workload completed: False"),
    ("no_oom_kill = true", {"oom_kills": 2, "oom_victims": ["hog (9)", "svc (3)"]},
     "2 guest OOM kill(s) ['hog (9)', 'svc (3)']"),
    ("nothing_left_stopped = true", {"left_stopped": ["hog(12)", "x(13)"]}, "left stopped at the end: hog(12), x(13)"),
    ("balloon_reaches_targets = true",
     {"balloon_steps": [{"vm": "vm", "target_mib": 640, "reached": False, "closest_mib": 700.5}]},
     "missed: vm 640 MiB (closest 700.5)"),
    ("protected_never_stopped = true", {"protected_stops": ["svc (3)", "svc-w1 (4)"]},
     "protected processes stopped: svc (3), svc-w1 (4)"),
    ("max_psi_full_stall_s = 5.0", {"psi_full_stall_s": 5.01}, "PSI full stall 5.01 s (limit 5.0 s)"),
    ("host_budget_held = true", {"host_budget_held": False, "host_peak_usage_mib": 1700.0},
     "budget cgroup peak 1700.0 MiB of 1600 MiB"),
    ("no_host_oom_kill = true", {"host_host_oom_kills": 1, "host_killed_vms": [{"vm": "b", "t_s": 12.0}]},
     "1 host OOM kill(s); VMs that died: b at 12.0 s"),
]


@pytest.mark.parametrize("expect,bad,detail", CASES, ids=[c[0].split()[0] for c in CASES])
def test_each_expectation_passes_on_good_figures_and_fails_on_bad_ones(expect, bad, detail):
    name = expect.split()[0]
    assert results(expect) == {name: (True, results(expect)[name][1])}
    assert results(expect)[name][0] is True
    assert results(expect, **bad) == {name: (False, detail)}


@pytest.mark.parametrize("expect,bad", [
    ("protected_completes = false", {"protected_completed": False}),
    ("no_oom_kill = false", {"oom_kills": 1, "oom_victims": ["hog (9)"]}),
    ("nothing_left_stopped = false", {"left_stopped": ["hog(12)"]}),
    ("balloon_reaches_targets = false", {"balloon_steps": [{"vm": "vm", "target_mib": 640, "reached": False,
                                                            "closest_mib": 700}]}),
    ("protected_never_stopped = false", {"protected_stops": ["svc (3)"]}),
    ("host_budget_held = false", {"host_budget_held": False}),
    ("no_host_oom_kill = false", {"host_host_oom_kills": 1}),
])
def test_an_expectation_written_false_wants_the_opposite(expect, bad):
    name = expect.split()[0]
    assert results(expect)[name][0] is False
    assert results(expect, **bad)[name][0] is True


def test_details_list_every_miss():
    steps = [{"vm": "a", "target_mib": 640, "reached": False, "closest_mib": 700.5},
             {"vm": "b", "target_mib": 512.4, "reached": False, "closest_mib": 600},
             {"vm": "b", "target_mib": 1024, "reached": True, "closest_mib": 1024}]
    assert results("balloon_reaches_targets = true", balloon_steps=steps)["balloon_reaches_targets"] == (
        False, "missed: a 640 MiB (closest 700.5), b 512 MiB (closest 600)")
    killed = [{"vm": "a", "t_s": 3.5}, {"vm": "b", "t_s": 9.0}]
    assert results("no_host_oom_kill = true", host_host_oom_kills=2, host_killed_vms=killed)["no_host_oom_kill"] == (
        False, "2 host OOM kill(s); VMs that died: a at 3.5 s, b at 9.0 s")


def test_good_detail_texts():
    assert results("no_oom_kill = true")["no_oom_kill"] == (True, "0 guest OOM kill(s)")
    assert results("nothing_left_stopped = true")["nothing_left_stopped"] == (True, "left stopped at the end: none")
    assert results("balloon_reaches_targets = true")["balloon_reaches_targets"] == \
        (True, "every balloon target reached")
    assert results("protected_never_stopped = true")["protected_never_stopped"] == \
        (True, "protected processes stopped: none")
    assert results("max_psi_full_stall_s = 5.0")["max_psi_full_stall_s"] == (True, "PSI full stall 5.0 s (limit 5.0 s)")
    assert results("no_host_oom_kill = true")["no_host_oom_kill"] == (True, "0 host OOM kill(s); VMs that died: none")


@pytest.mark.parametrize("expect,missing,detail", [
    ("no_oom_kill = true", {"oom_kills_unmeasured": ["a", "b"]}, "not measured for a, b: no guest samples and no dmesg"),
    ("no_oom_kill = false", {"oom_kills_unmeasured": ["a"]}, "not measured for a: no guest samples and no dmesg"),
    ("nothing_left_stopped = true", {"left_stopped_unmeasured": ["vm"]},
     "not measured for vm: the run ended before the guest's processes were listed"),
    ("max_psi_full_stall_s = 5.0", {"psi_full_stall_s": None}, "PSI full stall not measured (no guest samples)"),
    ("balloon_reaches_targets = true", {"balloon_steps": []}, "no balloon step was run"),
    ("balloon_reaches_targets = false", {"balloon_steps": []}, "no balloon step was run"),
    ("host_budget_held = true", {"host_budget_held": None, "host_budget_mib": None}, "the scenario has no host budget"),
    ("host_budget_held = false", {"host_budget_held": None, "host_budget_mib": None},
     "the scenario has no host budget"),
])
def test_an_expectation_whose_figure_is_missing_fails(expect, missing, detail):
    name = expect.split()[0]
    assert results(expect, **missing) == {name: (False, detail)}


def test_a_policy_without_fixed_targets_makes_the_balloon_expectation_not_applicable():
    got = results("balloon_reaches_targets = true", policy="mom", balloon_steps=[])
    assert got == {"balloon_reaches_targets": (True, "not applicable: policy mom has no fixed targets")}


def test_no_expectations_check_nothing_and_every_stated_one_is_checked():
    assert check_expectations(scenario(""), summary()) == []
    every = "\n".join(c[0] for c in CASES)
    assert [r.name for r in check_expectations(scenario(every), summary())] == [
        "protected_completes", "no_oom_kill", "nothing_left_stopped", "balloon_reaches_targets",
        "protected_never_stopped", "max_psi_full_stall_s", "host_budget_held", "no_host_oom_kill"]
    assert all(r.passed for r in check_expectations(scenario(every), summary()))


# -- the verdict ----------------------------------------------------------------------------------
def with_(base: dict, **changes) -> dict:
    return changed(copy.deepcopy(base), {"label": "balloon + Intermediate", **changes})


@pytest.mark.parametrize("changes,better,worse", [
    ({"host_host_oom_kills": 1}, [], ["host OOM kills"]),
    ({"host_host_swap_peak_mib": 100.0}, [], []),  # base has none: not compared
    ({"oom_kills": 1}, [], ["guest OOM kills"]),
    ({"oom_kills": None}, [], []),
    ({"psi_full_stall_s": 6.0}, [], []),  # within the 1 s slack
    ({"psi_full_stall_s": 6.01}, [], ["PSI full stall"]),
    ({"psi_full_stall_s": 3.99}, ["PSI full stall"], []),
    ({"psi_full_stall_s": None}, [], []),
    ({"protected_items_per_s": 105.0}, [], []),  # within 5 %
    ({"protected_items_per_s": 105.1}, ["protected throughput"], []),
    ({"protected_items_per_s": 94.9}, [], ["protected throughput"]),
    ({"protected_items_per_s": 95.0}, [], []),  # exactly 5 % less: within
    ({"balloon_seconds_to_target": 12.0}, [], []),
    ({"balloon_seconds_to_target": 7.9}, ["time to balloon target"], []),
    ({"balloon_seconds_to_target": 12.1}, [], ["time to balloon target"]),
    ({"balloon_reached": False, "balloon_seconds_to_target": None}, [], ["balloon target reached"]),
    ({"protected_completed": False}, [], ["protected workload completed"]),
    ({"left_stopped": ["hog(3)"]}, [], ["processes left stopped"]),
])
def test_verdict_directions_and_slack(changes, better, worse):
    v = judge(summary(), with_(summary(), **changes))
    assert (list(v.better), list(v.worse)) == (better, worse)


def test_verdict_directions_the_other_way():
    base = summary(balloon_reached=False, balloon_seconds_to_target=None, protected_completed=False,
                   host_host_swap_peak_mib=200.0, host_host_oom_kills=2, oom_kills=3)
    v = judge(base, with_(base, balloon_reached=True, balloon_seconds_to_target=5.0, protected_completed=True,
                          host_host_swap_peak_mib=160.0, host_host_oom_kills=0, oom_kills=0))
    assert v.better == ("host OOM kills", "host swap", "guest OOM kills", "balloon target reached",
                        "protected workload completed")
    assert v.worse == () and v.outcome is Outcome.BETTER
    assert judge(base, with_(base, host_host_swap_peak_mib=168.0)).better == ()  # within 32 MiB
    assert judge(base, with_(base, host_host_swap_peak_mib=232.5)).worse == ("host swap",)


def test_verdict_texts():
    base = summary()
    assert verdict(base, with_(base, psi_full_stall_s=1.0, protected_items_per_s=200.0)) == \
        "Verdict: the Intermediate module did better on PSI full stall, protected throughput than balloon only."
    assert verdict(base, with_(base, oom_kills=1, left_stopped=["x(1)"])) == \
        "Verdict: the Intermediate module did WORSE on guest OOM kills, processes left stopped than balloon only."
    assert verdict(base, with_(base, oom_kills=1, psi_full_stall_s=1.0)) == \
        "Verdict: the Intermediate module vs balloon only: mixed: better on PSI full stall; worse on guest OOM kills."
    other = with_(base)
    other["label"] = "MOM"
    assert verdict(base, other) == "Verdict: no measurable difference between balloon only and MOM."
    assert verdict(base, {**other, "oom_kills": 1}) == "Verdict: MOM did WORSE on guest OOM kills than balloon only."
    outcomes = [judge(base, with_(base, **c)).outcome for c in
                ({"psi_full_stall_s": 1.0}, {"oom_kills": 1}, {"oom_kills": 1, "psi_full_stall_s": 1.0}, {})]
    assert outcomes == [Outcome.BETTER, Outcome.WORSE, Outcome.MIXED, Outcome.SAME]


# -- the one-run table ----------------------------------------------------------------------------
def table_text(*summaries) -> str:
    console = Console(width=250, record=True)
    console.print(summary_table(list(summaries)))
    return console.export_text()


def row(text: str, label: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"│ {label} "))
    return [cell.strip() for cell in line.strip("│").split("│")][1:]


def test_the_one_run_table_cells():
    good = summary(stops=2, resumes=2, longest_stopped_s=12.5, longest_stopped_comm="hog")
    bad = summary(balloon_reached=False, balloon_closest_mib=700.4, oom_kills=2, oom_victims=["hog (9)"],
                  protected_completed=False, protected_items_per_s=None, left_stopped=["hog(9)"])
    bad["label"] = "balloon + Intermediate"
    out = table_text(good, bad)
    assert "x: balloon only vs balloon + Intermediate (host budget 1600 MiB, host swap none)" in out.replace("\n", " ")
    assert row(out, "balloon target reached") == ["yes, 640 MiB in 10.0 s", "NO: stuck at 700.4 of 640 MiB"]
    assert row(out, "guest OOM kills") == ["0", "2: hog (9)"]
    assert row(out, "protected workload") == ["completed, 100.0 items/s", "DID NOT complete"]
    assert row(out, "processes stopped / resumed") == ["2 / 2", "0 / 0"]
    assert row(out, "longest time stopped (s)") == ["12.5 (hog)", "0.0"]
    assert row(out, "left stopped at the end") == ["none", "hog(9)"]
    assert row(out, "balloon min / final (MiB)") == ["640 / 1024", "640 / 1024"]
    assert row(out, "host · peak budget use (MiB, from the cgroup)") == ["1500.0 of 1600", "1500.0 of 1600"]
    no_shrink = summary(balloon_target_mib=None)
    assert row(table_text(no_shrink), "balloon target reached") == ["no shrink in schedule"]


def several_guests(label="schedule", complete=True, **host):
    s = summary(label=label, complete=complete)
    s["guests"] = {
        "a": {"died": None, "balloon_min_mib": 600.4, "balloon_final_mib": 1000.0, "oom_kills": 2,
              "oom_victims": ["x (8)", "y (9)"], "protected": {"svc": {}}, "protected_completed": True,
              "protected_items_per_s": 7.25, "psi_full_stall_s": 1.5, "psi_some_stall_s": 3.0, "stops": 1,
              "resumes": 1, "qemu_swap_peak_mib": 12.5},
        "b": {"died": {"t_s": 12.0, "host_oom_kill": True}, "balloon_min_mib": None, "oom_kills": 1,
              "oom_victims": [], "protected": {}, "psi_full_stall_s": None, "psi_some_stall_s": None, "stops": 0,
              "resumes": 0, "qemu_swap_peak_mib": None},
    }
    s["host"].update(host_oom_kills=2, host_swap="file:512", host_swap_peak_mib=99.0,
                     killed_vms=[{"vm": "b", "t_s": 12.0, "host_oom_kill": True},
                                 {"vm": "c", "t_s": 3.5, "host_oom_kill": False},
                                 {"vm": "d", "t_s": 4.0, "host_oom_kill": True}], **host)
    return s


def test_the_table_of_several_guests_and_the_host():
    first = several_guests()
    second = several_guests("MOM", complete=False, budget_held=False, peak_usage_mib=1700.0)
    second["guests"]["b"] = {"died": {"t_s": 5.0, "reason": "QEMU exited with status -9 " + "x" * 80}}
    del second["guests"]["a"]
    out = table_text(first, second)
    header = next(line for line in out.splitlines() if "schedule" in line and "┃" in line)
    assert [c.strip() for c in header.split("┃")[1:-1]] == ["", "schedule", "MOM (PARTIAL)"]
    assert row(out, "a · alive at the end") == ["yes", "-"]  # the second run has no guest a
    assert row(out, "a · balloon min / final (MiB)") == ["600 / 1000", "-"]
    assert row(out, "a · guest OOM kills") == ["2: x (8), y (9)", "-"]
    assert row(out, "a · protected workload") == ["completed, 7.2 items/s", "-"]
    assert row(out, "a · PSI full / some stall (s)") == ["1.5 / 3.0", "-"]
    assert row(out, "a · host swap of its QEMU, peak (MiB)") == ["12.5", "-"]
    assert row(out, "b · alive at the end") == ["NO: died at 12.0 s (host OOM killer)",
                                                "NO: died at 5.0 s (QEMU exited with status -9 " + "x" * 33 + ")"]
    assert row(out, "b · balloon min / final (MiB)") == ["no samples", "no samples"]
    assert row(out, "b · guest OOM kills") == ["1: ?", "-"]
    assert row(out, "b · protected workload") == ["none here", "-"]
    assert row(out, "host · peak budget use (MiB, from the cgroup)") == ["1500.0 of 1600", "1700.0 of 1600 (EXCEEDED)"]
    assert row(out, "host · host swap peak (MiB)") == ["99.0", "99.0"]
    assert row(out, "host · host OOM kills (VM)") == ["2: b at 12.0 s, d at 4.0 s"] * 2
    assert row(out, "host · time at the budget limit (s)") == ["3.0", "3.0"]
    assert "host · host OOM kills (VM)" in out
    first["host"]["host_oom_kills"] = 0
    first["host"]["host_swap"] = "none"
    out = table_text(first)
    assert row(out, "host · host OOM kills (VM)") == ["0"] and row(out, "host · host swap peak (MiB)") == ["no host swap"]


def test_a_single_guest_that_died_gets_its_row_and_no_budget_no_host_rows():
    s = summary()
    s["host"]["budget_mib"] = None
    s["guests"]["vm"]["died"] = {"t_s": 30.0, "host_oom_kill": False, "reason": None}
    out = table_text(s)
    assert "x: balloon only (guest swap: file:1024)" in out
    assert row(out, "alive at the end") == ["NO: died at 30.0 s (?)"]
    assert "host ·" not in out
    del s["guests"]["vm"]["died"]
    assert "alive at the end" not in table_text(s)
    del s["complete"]  # an older summary: complete unless it says otherwise
    assert "PARTIAL" not in table_text(s)


def test_long_cells_fold():
    s = summary(longest_stopped_comm="a-very-long-unbreakable-process-name-that-goes-on@")
    console = Console(width=50, record=True)
    console.print(summary_table([s]))
    out = console.export_text()
    assert "…" not in out and "@" in out  # nothing cut off: the word's end is there
