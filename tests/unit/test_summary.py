"""The scenario report's figures, from evidence built in memory (no folder, no plot), so that
every rule of harness/scenario/report.py fails a fast unit test when it is broken (`make
mutation` runs these against each of its mutants)."""

import pytest
from test_run_report import SCENARIO as TWO  # guests a (svc, protected) and b (hog), a budget

from harness.ledger import Ledger
from harness.scenario.evidence import GuestEvidence, RunEvidence
from harness.scenario.model import parse_scenario
from harness.scenario.report import (
    delta,
    longest_stopped,
    oom_victims,
    protected_stops,
    step_results,
    summarize,
    summarize_guest,
    summarize_host,
    time_at_limit,
    workload_summary,
)

T0 = 1000.0

ONE = """
[scenario]
name = "one"
[vm]
memory_mib = 1024
balloon_start_mib = 1000
[[workloads]]
name = "a-fifteen-chars"
kind = "protected"
role = "protected"
[[workloads]]
name = "svc"
kind = "protected"
role = "protected"
[[workloads]]
name = "hog"
kind = "memhog"
role = "distinct"
[[balloon]]
at_s = 2
target_mib = 640
[[balloon]]
at_s = 10
target_mib = 800
[[balloon]]
at_s = 14
target_mib = 1024
"""


def guest_of(text=ONE):
    return parse_scenario(text, "one.toml").guests[0]


def ledger(vm="vm", actual=(), host=()) -> Ledger:
    """Rows from (t_s, balloon_actual_mib) and host (t_s, {field: value}) pairs."""
    rows = [{"t_s": t, "vm": vm, "balloon_actual_mib": a} for t, a in actual]
    rows += [{"t_s": t, "vm": "host", **fields} for t, fields in host]
    rows.sort(key=lambda r: r["t_s"])
    return Ledger(T0, rows, {vm: []})


def run_evidence(events=(), guests=None, meta=None) -> RunEvidence:
    return RunEvidence(folder=None, meta={"t0": T0, "finished": True, **(meta or {})},
                       harness_events=list(events), host_rows=[], guests=guests or {})


# -- small rules ---------------------------------------------------------------------------------
def test_oom_victims_and_delta():
    dmesg = ("[ 1.0] Out of memory: Killed process 812 (hog) total-vm:1kB\n"
             "[ 2.0] oom-kill:constraint=CONSTRAINT_NONE\n"
             "[ 3.0] Out of memory: Killed process 9 (stress-ng-vm) anon-rss:3kB\n")
    assert oom_victims(dmesg) == ["hog (812)", "stress-ng-vm (9)"]
    assert oom_victims(None) == [] and oom_victims("") == []
    assert delta([]) is None and delta([5.0]) is None
    assert delta([1.0, 4.0]) == 3.0 and delta([2.0, 9.0, 7.0]) == 5.0


def test_longest_stopped():
    events = [
        {"t": 30.0, "event": "resume", "pid": 1},
        {"t": 10.0, "event": "stop", "pid": 1, "comm": "hog"},
        {"t": 12.0, "event": "stop", "pid": 1, "comm": "again"},  # a second stop keeps the first time
        {"t": 11.0, "event": "stop", "pid": 2, "comm": "short"},
        {"t": 13.0, "event": "resume", "pid": 2},
        {"t": 14.0, "event": "resume", "pid": 7},  # never stopped: ignored
        {"t": 15.0, "event": "stop", "pid": None, "comm": "unit"},  # no pid: not a process
        {"t": 16.0, "event": "pressure", "pid": 3},
        {"event": "start"},  # no time: sorted first, not a stop
    ]
    assert longest_stopped(events, None) == (20.0, "hog")
    # Still stopped at the end: counted until the daemon's end, if that is known.
    open_one = events + [{"t": 20.0, "event": "stop", "pid": 5}]
    assert longest_stopped(open_one, None) == (20.0, "hog")
    assert longest_stopped(open_one, 40.04) == (20.0, "?")
    assert longest_stopped(open_one, 40.1) == (20.1, "?")
    assert longest_stopped(open_one, 39.0) == (20.0, "hog")
    assert longest_stopped([], 50.0) == (0.0, None)
    # Equal lengths: the first one found stays.
    tie = [{"t": 0.0, "event": "stop", "pid": 1, "comm": "a"}, {"t": 5.0, "event": "resume", "pid": 1},
           {"t": 6.0, "event": "stop", "pid": 2, "comm": "b"}, {"t": 11.0, "event": "resume", "pid": 2}]
    assert longest_stopped(tie, None) == (5.0, "a")
    assert longest_stopped([{"t": 0.0, "event": "stop", "pid": 1, "comm": "a"}], 5.0) == (5.0, "a")
    assert longest_stopped(tie + [{"t": 20.0, "event": "stop", "pid": 3, "comm": "c"}], 25.0) == (5.0, "a")


def test_protected_stops_match_names_and_workers_cut_to_15_characters():
    events = [
        {"event": "stop", "comm": "a-fifteen-chars", "pid": 1},
        {"event": "stop", "comm": "svc", "pid": 2},
        {"event": "stop", "comm": "svc-w1", "pid": 3},
        {"event": "stop", "comm": "hog", "pid": 4},
        {"event": "stop", "comm": "svcx", "pid": 5},
        {"event": "resume", "comm": "svc", "pid": 2},
        {"event": "stop", "pid": 6},
    ]
    assert protected_stops(guest_of(), events) == ["a-fifteen-chars (1)", "svc (2)", "svc-w1 (3)"]
    workers = parse_scenario(ONE.replace("a-fifteen-chars", "fourteen-chars"), "x.toml").guests[0]
    # A worker's comm "fourteen-chars-w1" is cut to 15 characters by the kernel.
    assert protected_stops(workers, [{"event": "stop", "comm": "fourteen-chars-", "pid": 8},
                                     {"event": "stop", "comm": "fourteen-chars", "pid": 9},
                                     {"event": "stop", "comm": "fourteen-charsx", "pid": 10}]) == \
        ["fourteen-chars- (8)", "fourteen-chars (9)"]


def test_step_results_judge_each_step_within_its_window_and_the_tolerance():
    actual = [(0, 1000), (2, 1000), (4, 700), (5.26, 656.0), (6, 655.94), (10, 800), (11, 784), (13, 790),
              (14, 900), (15, 1024)]
    steps = step_results(ledger(actual=actual), guest_of(), end_s=15)
    assert steps == [
        {"vm": "vm", "target_mib": 640, "at_s": 2, "direction": "down", "reached": True, "closest_mib": 655.9,
         "seconds_to_reach": 3.3},  # 656.0 is within 16 MiB
        {"vm": "vm", "target_mib": 800, "at_s": 10, "direction": "up", "reached": True, "closest_mib": 800.0,
         "seconds_to_reach": 0.0},  # a sample at the step's own time counts
        {"vm": "vm", "target_mib": 1024, "at_s": 14, "direction": "up", "reached": True, "closest_mib": 1024.0,
         "seconds_to_reach": 1.0},
    ]
    # 16 MiB is the tolerance: 656.1 is not within it; a window ends at the next step.
    missed = step_results(ledger(actual=[(2, 1000), (5, 656.1), (10, 641), (12, 1000)]), guest_of(), end_s=12)
    assert (missed[0]["reached"], missed[0]["closest_mib"], missed[0]["seconds_to_reach"]) == (True, 641.0, 8.0)
    late = step_results(ledger(actual=[(2, 1000), (5, 656.1), (10.5, 641), (14.5, 800)]), guest_of(), end_s=16)
    assert (late[0]["reached"], late[0]["closest_mib"], late[0]["seconds_to_reach"]) == (False, 656.1, None)
    assert (late[1]["reached"], late[1]["closest_mib"]) == (False, 641.0)  # 800 came after the next step
    assert late[2] == {"vm": "vm", "target_mib": 1024, "at_s": 14, "direction": "up", "reached": False,
                       "closest_mib": 800.0, "seconds_to_reach": None}
    assert step_results(ledger(actual=[(2, 1000)]), guest_of(), end_s=16)[2]["closest_mib"] is None
    # The first step's direction is against the start (balloon_start_mib, else the memory).
    down_from_start = guest_of(ONE.replace("target_mib = 640", "target_mib = 1010"))
    assert step_results(ledger(), down_from_start, 0)[0]["direction"] == "up"
    no_start = guest_of(ONE.replace("balloon_start_mib = 1000\n", "").replace("target_mib = 640", "target_mib = 1010"))
    assert step_results(ledger(), no_start, 0)[0]["direction"] == "down"
    same = guest_of(ONE.replace("target_mib = 640", "target_mib = 1000"))
    assert step_results(ledger(), same, 0)[0]["direction"] == "up"  # no change is not a shrink
    # Another guest's rows do not count.
    assert not step_results(ledger(vm="other", actual=[(3, 640)]), guest_of(), 15)[0]["reached"]


def test_workload_summary_from_statuses_progress_and_harness_events():
    evidence = GuestEvidence("vm", final={"statuses": {"svc": {"result": "success", "exit_status": 0},
                                                       "hog": {"result": "signal", "exit_status": 9}}},
                             progress={"svc": [{"event": "progress", "items": 5},
                                               {"event": "done", "items": 100, "items_per_s": 12.5}],
                                       "hog": [{"event": "done", "items": 3}]},
                             samples=[{"progress": {"a-fifteen-chars": {"event": "done", "items": 7,
                                                                                 "items_per_s": 1.5}}},
                                      {"progress": {"a-fifteen-chars": None}}])
    events = [{"event": "workload-finished", "vm": "vm", "name": "a-fifteen-chars", "result": "success",
               "exit_status": 0},
              {"event": "workload-finished", "vm": "vm", "name": "svc", "result": "failed", "exit_status": 1},
              {"event": "workload-finished", "vm": "other", "name": "hog", "result": "success"}]
    out = workload_summary(guest_of(), evidence, events)
    assert out["svc"] == {"role": "protected", "kind": "protected", "result": "success", "exit_status": 0,
                          "completed": True, "items_per_s": 12.5, "items": 100}  # final.json wins
    assert out["hog"] == {"role": "distinct", "kind": "memhog", "result": "signal", "exit_status": 9,
                          "completed": False, "items_per_s": None, "items": 3}
    # A killed run: no final.json, the progress seen in the samples and the harness's event.
    assert out["a-fifteen-chars"] == {"role": "protected", "kind": "protected", "result": "success",
                                               "exit_status": 0, "completed": True, "items_per_s": 1.5,
                                               "items": 7}
    nothing = workload_summary(guest_of(), GuestEvidence("vm"), [])
    assert nothing["svc"] == {"role": "protected", "kind": "protected", "result": None, "exit_status": None,
                              "completed": False, "items_per_s": None, "items": None}
    failed = GuestEvidence("vm", progress={"svc": [{"event": "failed", "items": 1}, {"event": "progress"}]})
    assert workload_summary(guest_of(), failed, [])["svc"]["completed"] is False
    assert workload_summary(guest_of(), failed, [])["svc"]["items"] == 1
    done_no_status = GuestEvidence("vm", progress={"svc": [{"event": "done", "items": 4}]})
    assert workload_summary(guest_of(), done_no_status, [])["svc"]["completed"] is True


# -- one guest -----------------------------------------------------------------------------------------
def full_guest():
    samples = [{"t": t, "oom_kill": k, "psi_some_total_us": s, "psi_full_total_us": f}
               for t, k, s, f in ((0, 2, 1_000_000, 500_000), (5, None, None, None), (9, 3, 2_125_001, 1_625_001))]
    events = [{"t": 10.0, "event": "stop", "pid": 4, "comm": "hog"}, {"t": 25.0, "event": "resume", "pid": 4},
              {"t": 11.0, "event": "stop", "pid": 2, "comm": "svc"}]
    return GuestEvidence("vm", samples=samples, daemon_events=events,
                         final={"left_stopped": ["x(9)"], "ssh_longest_silence_s": 4.5, "daemon_end_t": 12.0,
                                "statuses": {"svc": {"result": "success"}}},
                         progress={"svc": [{"event": "done", "items_per_s": 2.0}],
                                   "a-fifteen-chars": [{"event": "done", "items_per_s": 3.25}]},
                         dmesg="Out of memory: Killed process 5 (hog)\n")


def full_ledger():
    rows = [{"t_s": t, "vm": "vm", "balloon_actual_mib": a, "qemu_rss_mib": r, "qemu_swap_mib": w}
            for t, a, r, w in ((0, 1000, 300, 0), (3, 650.44, 500.44, 10.05), (12, 800.26, 400, None),
                               (20, 1024, None, 2))]
    return Ledger(T0, rows, {"vm": []})


def test_summarize_guest():
    run = run_evidence(events=[{"event": "collect-start", "t": T0 + 12.0}])
    s = summarize_guest(guest_of(), full_guest(), full_ledger(), run)
    assert s["vm"] == "vm" and s["memory_mib"] == 1024 and s["alive"] is True and s["died"] is None
    assert s["intermediate"] is True and s["swap"] == "file:1024" and s["balloon_start_mib"] == 1000
    assert (s["balloon_min_mib"], s["balloon_final_mib"]) == (650.4, 800.3)  # final: before collection
    assert (s["balloon_target_mib"], s["balloon_reached"], s["balloon_seconds_to_target"],
            s["balloon_closest_mib"]) == (640, True, 1.0, 650.4)
    assert [(x["target_mib"], x["reached"], x["seconds_to_reach"]) for x in s["balloon_steps"]] == [
        (640, True, 1.0), (800, True, 2.0), (1024, True, 6.0)]  # the last step's window ends with the ledger
    assert s["oom_kills"] == 1 and s["oom_kills_measured"] is True and s["oom_victims"] == ["hog (5)"]
    assert (s["psi_some_stall_s"], s["psi_full_stall_s"]) == (1.13, 1.13)  # 1.125001 s
    assert s["protected_completed"] is True and s["protected_items_per_s"] == 5.25
    assert set(s["protected"]) == {"a-fifteen-chars", "svc"} and set(s["workloads"]) == {
        "a-fifteen-chars", "svc", "hog"}
    assert (s["stops"], s["resumes"], s["protected_stops"]) == (2, 1, ["svc (2)"])
    assert (s["longest_stopped_s"], s["longest_stopped_comm"]) == (15.0, "hog")
    assert s["left_stopped"] == ["x(9)"] and s["left_stopped_measured"] is True
    assert s["ssh_longest_silence_s"] == 4.5 and s["guest_samples"] == 3
    assert (s["qemu_rss_peak_mib"], s["qemu_swap_peak_mib"]) == (500.4, 10.1)


def test_summarize_guest_without_evidence():
    s = summarize_guest(guest_of(), GuestEvidence("vm"), Ledger(T0, [], {}), run_evidence())
    assert s["balloon_min_mib"] is None and s["balloon_final_mib"] is None
    assert s["oom_kills"] == 0 and s["oom_kills_measured"] is False
    assert s["psi_some_stall_s"] is None and s["psi_full_stall_s"] is None
    assert s["left_stopped"] == [] and s["left_stopped_measured"] is False
    assert s["protected_completed"] is False and s["protected_items_per_s"] is None
    assert s["qemu_rss_peak_mib"] is None and s["qemu_swap_peak_mib"] is None
    assert s["balloon_reached"] is False and s["balloon_target_mib"] == 640
    assert (s["longest_stopped_s"], s["longest_stopped_comm"]) == (0.0, None)
    # A dmesg that could not be collected is no measurement; a real one is.
    assert not summarize_guest(guest_of(), GuestEvidence("vm", dmesg="(not collected: ssh)\n"), Ledger(T0),
                               run_evidence())["oom_kills_measured"]
    assert summarize_guest(guest_of(), GuestEvidence("vm", dmesg="boot\n"), Ledger(T0),
                           run_evidence())["oom_kills_measured"]
    # The guest's own counter counts even without dmesg.
    counted = GuestEvidence("vm", samples=[{"oom_kill": 1}, {"oom_kill": 1}])
    assert summarize_guest(guest_of(), counted, Ledger(T0), run_evidence())["oom_kills_measured"]


def test_a_guest_killed_by_the_host():
    run = run_evidence(events=[{"event": "vm-died", "vm": "other", "t": T0 + 1},
                               {"event": "vm-died", "vm": "vm", "t": T0 + 7.25, "reason": "QEMU exited",
                                "host_oom_kill": True}])
    s = summarize_guest(guest_of(), GuestEvidence("vm"), full_ledger(), run)
    assert s["alive"] is False and s["died"] == {"t_s": 7.2, "reason": "QEMU exited", "host_oom_kill": True}
    assert s["left_stopped_measured"] is True  # its processes died with it
    assert s["balloon_final_mib"] == 1024.0  # no collection: the last sample


def test_no_shrink_step_means_no_balloon_target():
    guest = guest_of(ONE.replace("target_mib = 640", "target_mib = 1010").replace("target_mib = 800",
                                                                                   "target_mib = 1020"))
    s = summarize_guest(guest, GuestEvidence("vm"), full_ledger(), run_evidence())
    assert s["balloon_target_mib"] is None and s["balloon_reached"] is None
    assert s["balloon_seconds_to_target"] is None and s["balloon_closest_mib"] is None
    two_downs = guest_of(ONE.replace("target_mib = 640", "target_mib = 900").replace("target_mib = 800",
                                                                                    "target_mib = 650"))
    s = summarize_guest(two_downs, GuestEvidence("vm"), full_ledger(), run_evidence())
    assert (s["balloon_target_mib"], s["balloon_closest_mib"]) == (650, 800.3)  # the lowest of the shrinks


# -- the host ------------------------------------------------------------------------------------------
def test_time_at_limit_counts_the_intervals_ending_at_the_limit():
    usage = ledger(host=[(0, {"budget_usage_mib": 300}), (1, {"budget_usage_mib": 492}),
                         (3, {"budget_usage_mib": 491.9}), (4, {"budget_usage_mib": 500}),
                         (4.5, {"budget_usage_mib": 200})])
    assert time_at_limit(usage, 500) == 2.0  # 1 s to t=1 (at 492 = 500 - 8 MiB) and 1 s to t=4
    big = ledger(host=[(0, {"budget_usage_mib": 0}), (2, {"budget_usage_mib": 3970}),
                       (3, {"budget_usage_mib": 3959})])
    assert time_at_limit(big, 4000) == 2.0  # 1 % of 4000 = 40 MiB
    assert time_at_limit(ledger(), 1000) is None
    quarter = ledger(host=[(0, {"budget_usage_mib": 500}), (1.25, {"budget_usage_mib": 500}),
                           (2.5, {"budget_usage_mib": 100}), (3.5, {"budget_usage_mib": 499})])
    assert time_at_limit(quarter, 500) == 2.2  # 2.25 s to 0.1 s; from the second sample on, never last to first
    assert time_at_limit(ledger(host=[(0, {"budget_usage_mib": 1000})]), 1000) == 0.0


HOSTED = ONE.replace("[vm]", "[host]\nmemory_budget_mib = 1600\nhost_swap = \"file:512\"\n[vm]")


def test_summarize_host():
    scenario = parse_scenario(HOSTED, "h.toml")
    rows = [(0, {"budget_peak_mib": 900, "budget_usage_mib": 900, "budget_limit_hits": 0, "host_swap_used_mib": 0,
                 "host_oom_kills": 0}),
            (1, {"budget_peak_mib": 1595.46, "budget_usage_mib": 1590, "budget_limit_hits": 3,
                 "host_swap_used_mib": 120.06, "host_oom_kills": 1}),
            (2, {"budget_peak_mib": 1595.46, "budget_usage_mib": 1000, "budget_limit_hits": 4})]
    events = [{"event": "vm-died", "vm": "vm", "t": T0 + 5.26, "host_oom_kill": True}]
    h = summarize_host(scenario, ledger(host=rows), run_evidence(events=events))
    assert h == {"budget_mib": 1600, "host_swap": "file:512", "peak_usage_mib": 1595.5, "budget_held": True,
                 "host_swap_peak_mib": 120.1, "qemu_swap_peak_mib": None, "host_oom_kills": 1,
                 "killed_vms": [{"vm": "vm", "t_s": 5.3, "host_oom_kill": True}], "time_over_budget_s": 1.0,
                 "limit_hits": 4}
    # The final reading wins over the ledger's; more kills in the kernel log than the counter saw.
    final = events + [{"event": "budget-final", "peak_mib": 1700.0, "oom_kills": 0},
                      {"event": "host-oom-kill"}, {"event": "host-oom-kill"}, {"event": "policy"},
                      {"event": "workload-started"}]
    h = summarize_host(scenario, ledger(host=rows), run_evidence(events=final))
    assert (h["peak_usage_mib"], h["budget_held"], h["host_oom_kills"]) == (1700.0, False, 2)
    assert summarize_host(scenario, ledger(host=rows), run_evidence(
        events=[{"event": "budget-final", "oom_kills": 4}]))["host_oom_kills"] == 4
    at_budget = summarize_host(scenario, ledger(host=rows), run_evidence(
        events=[{"event": "budget-final", "peak_mib": 1600.0}]))
    assert at_budget["budget_held"] is True  # the budget itself is within it
    unsampled = summarize_host(scenario, Ledger(T0), run_evidence())
    assert (unsampled["peak_usage_mib"], unsampled["budget_held"], unsampled["time_over_budget_s"]) == (
        None, None, None)


def test_summarize_host_without_a_budget_or_samples():
    scenario = parse_scenario(ONE, "one.toml")
    h = summarize_host(scenario, Ledger(T0), run_evidence())
    assert h == {"budget_mib": None, "host_swap": "none", "peak_usage_mib": None, "budget_held": None,
                 "host_swap_peak_mib": None, "qemu_swap_peak_mib": None, "host_oom_kills": 0, "killed_vms": [],
                 "time_over_budget_s": None, "limit_hits": None}
    # Without the cgroup's peak: the highest usage; host swap from the QEMUs' VmSwap per sample.
    rows = [{"t_s": 0, "vm": "host", "budget_usage_mib": 700}, {"t_s": 1, "vm": "host", "budget_usage_mib": 800.04},
            {"t_s": 0, "vm": "a", "qemu_swap_mib": 10}, {"t_s": 0, "vm": "b", "qemu_swap_mib": 5.55},
            {"t_s": 0, "vm": "c", "qemu_swap_mib": None},
            {"t_s": 1, "vm": "a", "qemu_swap_mib": 1}, {"t_s": 1, "vm": "b", "qemu_swap_mib": None}]
    h = summarize_host(parse_scenario(HOSTED, "h.toml"), Ledger(T0, rows, {}), run_evidence())
    assert (h["peak_usage_mib"], h["budget_held"]) == (800.0, True)
    assert (h["host_swap_peak_mib"], h["qemu_swap_peak_mib"]) == (15.6, 15.6)
    # No budget: no time at its limit, whatever the usage.
    assert summarize_host(parse_scenario(ONE, "one.toml"), Ledger(T0, rows, {}),
                          run_evidence())["time_over_budget_s"] is None


# -- the run -------------------------------------------------------------------------------------------


def two_guests(**b_final):
    a = GuestEvidence("a", samples=[{"oom_kill": 0, "psi_full_total_us": 0}, {"oom_kill": 1,
                                                                              "psi_full_total_us": 1_250_000}],
                      daemon_events=[{"t": 1.0, "event": "stop", "pid": 3, "comm": "svc"},
                                     {"t": 4.0, "event": "resume", "pid": 3}],
                      final={"left_stopped": ["p(1)"], "ssh_longest_silence_s": 2.0},
                      progress={"svc": [{"event": "done", "items_per_s": 4.0}]},
                      dmesg="Out of memory: Killed process 8 (x)\n")
    b = GuestEvidence("b", samples=[{"oom_kill": 0, "psi_full_total_us": 0}, {"oom_kill": 2,
                                                                              "psi_full_total_us": 500_000}],
                      daemon_events=[{"t": 0.0, "event": "stop", "pid": 9, "comm": "hog"}],
                      final={"left_stopped": ["q(2)"], "ssh_longest_silence_s": None, "daemon_end_t": 7.0,
                             **b_final},
                      dmesg="Out of memory: Killed process 4 (hog)\n")
    return {"a": a, "b": b}


def test_summarize_totals_over_guests_tagged_with_their_names():
    scenario = parse_scenario(TWO, "pair.toml")
    s = summarize(scenario, run_evidence(guests=two_guests()), Ledger(T0), "mom", "MOM")
    assert (s["scenario"], s["mode"], s["variant"], s["label"], s["policy"]) == ("pair", "mom", "mom", "MOM",
                                                                                 "schedule")
    assert s["intermediate"] is True and s["complete"] is True and s["swap"] == "file:1024"
    assert set(s["guests"]) == {"a", "b"} and s["host"]["budget_mib"] == 1000
    assert s["oom_kills"] == 3 and s["oom_victims"] == ["a: x (8)", "b: hog (4)"]
    assert s["oom_kills_unmeasured"] == [] and s["left_stopped_unmeasured"] == []
    assert s["protected_completed"] is True  # b has no protected workload: it does not count
    assert s["protected_items_per_s"] == 4.0 and s["psi_full_stall_s"] == 1.75 and s["psi_some_stall_s"] is None
    assert (s["stops"], s["resumes"]) == (2, 1)
    assert s["protected_stops"] == ["a: svc (3)"] and s["left_stopped"] == ["a: p(1)", "b: q(2)"]
    assert (s["longest_stopped_s"], s["longest_stopped_comm"]) == (7.0, "hog")
    assert s["ssh_longest_silence_s"] == 2.0
    assert [x["vm"] for x in s["balloon_steps"]] == ["a"]
    assert set(s["workloads"]) == {"svc", "hog"}
    for key in ("balloon_target_mib", "balloon_reached", "balloon_seconds_to_target", "balloon_closest_mib"):
        assert s[key] is None  # several guests: per guest only


def test_summarize_names_the_guests_a_figure_is_missing_for():
    scenario = parse_scenario(TWO, "pair.toml")
    guests = two_guests()
    guests["b"] = GuestEvidence("b")
    s = summarize(scenario, run_evidence(guests=guests, meta={"finished": False}), Ledger(T0), "x", "x")
    assert s["complete"] is False
    assert s["oom_kills_unmeasured"] == ["b"] and s["left_stopped_unmeasured"] == ["b"]
    del guests["a"]
    s = summarize(scenario, run_evidence(guests=guests), Ledger(T0), "x", "x")
    assert s["protected_completed"] is False and s["oom_kills_unmeasured"] == ["a", "b"]
    assert s["intermediate"] is True and s["ssh_longest_silence_s"] == 0


def test_a_single_guest_keeps_its_own_figures_untagged():
    scenario = parse_scenario(ONE, "one.toml")
    s = summarize(scenario, run_evidence(guests={"vm": full_guest()}), full_ledger(), "on", "balloon + Intermediate")
    assert s["oom_victims"] == ["hog (5)"] and s["left_stopped"] == ["x(9)"] and s["protected_stops"] == ["svc (2)"]
    assert (s["balloon_target_mib"], s["balloon_reached"], s["balloon_seconds_to_target"],
            s["balloon_closest_mib"]) == (640, True, 1.0, 650.4)
    assert s["protected_items_per_s"] == 5.25 and s["psi_some_stall_s"] == 1.13


@pytest.mark.parametrize("values,total", [([1.0, None, 2.5], 3.5), ([None, None], None), ([], None),
                                          ([0.1236, 0.0001], 0.124), ([0], 0)])
def test_sums_skip_missing_figures(values, total):
    from harness.scenario.report import _sum
    assert _sum(values) == total
