"""From a run's evidence to figures: one summary per guest, one for the host, totals over
the guests, and the scenario's expectations checked against them. Everything is computed
from the run folder (harness.scenario.evidence), so a killed run gives a partial summary."""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass

from harness.ledger import HOST_ROW, Ledger
from harness.scenario.evidence import GuestEvidence, RunEvidence
from harness.scenario.spec import GuestSection, Scenario

OOM_LINE = re.compile(r"Out of memory: Killed process (\d+) \(([^)]*)\)")
#: How close `actual` must come to a scheduled target to count as reached (MiB), as
#: BalloonController.wait_until.
REACHED_TOLERANCE_MIB = 16.0


def oom_victims(dmesg: str | None) -> list[str]:
    return [f"{comm} ({pid})" for pid, comm in OOM_LINE.findall(dmesg or "")]


def delta(values: list[float]) -> float | None:
    return values[-1] - values[0] if len(values) >= 2 else None


def _column(samples: list[dict], key: str) -> list[float]:
    return [float(s[key]) for s in samples if s.get(key) is not None]


def longest_stopped(events: list[dict], end_t: float | None) -> tuple[float, str | None]:
    """The longest stop->resume interval in the daemon's event log (an unresumed stop counts
    until `end_t`)."""
    open_since: dict[int, tuple[float, str]] = {}
    longest, who = 0.0, None
    for event in sorted(events, key=lambda e: e.get("t", 0)):
        pid = event.get("pid")
        if event.get("event") == "stop" and pid is not None:
            open_since.setdefault(pid, (event["t"], event.get("comm", "?")))
        elif event.get("event") == "resume" and pid in open_since:
            since, comm = open_since.pop(pid)
            if event["t"] - since > longest:
                longest, who = event["t"] - since, comm
    for since, comm in open_since.values():
        if end_t is not None and end_t - since > longest:
            longest, who = end_t - since, comm
    return round(longest, 1), who


def protected_stops(guest: GuestSection, events: list[dict]) -> list[str]:
    """Stop decisions that hit a protected workload (its comm is its name, workers name-wN)."""
    names = {w.name[:15] for w in guest.protected}
    hits = []
    for event in events:
        comm = event.get("comm") or ""
        if event.get("event") == "stop" and (comm in names or any(comm.startswith(f"{n}-w"[:15]) for n in names)):
            hits.append(f"{comm} ({event.get('pid')})")
    return hits


def step_results(ledger: Ledger, guest: GuestSection, end_s: float) -> list[dict]:
    """Each scheduled step, judged from the ledger: did `actual` come within the tolerance
    of its target before the next step (or the end), how fast, how close."""
    xs, ys = ledger.series("balloon_actual_mib", guest.name)
    results = []
    for i, step in enumerate(guest.balloon):
        until = guest.balloon[i + 1].at_s if i + 1 < len(guest.balloon) else end_s
        window = [(x, y) for x, y in zip(xs, ys, strict=True) if step.at_s <= x <= until]
        hit = next((x for x, y in window if abs(y - step.target_mib) <= REACHED_TOLERANCE_MIB), None)
        closest = min((y for _, y in window), key=lambda y: abs(y - step.target_mib), default=None)
        previous = guest.balloon[i - 1].target_mib if i else guest.start_mib
        results.append({"vm": guest.name, "target_mib": step.target_mib, "at_s": step.at_s,
                        "direction": "down" if step.target_mib < previous else "up",
                        "reached": hit is not None, "closest_mib": round(closest, 1) if closest is not None else None,
                        "seconds_to_reach": round(hit - step.at_s, 1) if hit is not None else None})
    return results


def workload_summary(guest: GuestSection, evidence: GuestEvidence, events: list[dict]) -> dict[str, dict]:
    statuses = dict(evidence.final.get("statuses") or {})
    for e in events:  # a killed run has no final.json: the harness events say what finished
        if e.get("event") == "workload-finished" and e.get("vm") == guest.name:
            statuses.setdefault(e["name"], e)
    last_seen = {}
    for sample in evidence.samples:
        for name, record in (sample.get("progress") or {}).items():
            if record:
                last_seen[name] = record
    out = {}
    for spec in guest.workloads:
        records = evidence.progress.get(spec.name) or ([last_seen[spec.name]] if spec.name in last_seen else [])
        final = next((r for r in reversed(records) if r.get("event") in ("done", "failed")), None)
        status = statuses.get(spec.name) or {}
        result = status.get("result")
        out[spec.name] = {
            "role": spec.role.value, "kind": spec.kind.value, "result": result,
            "exit_status": status.get("exit_status"),
            "completed": bool(final and final.get("event") == "done" and result in ("success", None)),
            "items_per_s": final.get("items_per_s") if final else None,
            "items": final.get("items") if final else None,
        }
    return out


def summarize_guest(guest: GuestSection, evidence: GuestEvidence, ledger: Ledger, run: RunEvidence) -> dict:
    samples = evidence.samples
    events = evidence.daemon_events
    workloads = workload_summary(guest, evidence, run.harness_events)
    protected = {n: w for n, w in workloads.items() if w["role"] == "protected"}
    died = next((e for e in run.harness_events if e.get("event") == "vm-died" and e.get("vm") == guest.name), None)
    end_s = ledger.rows[-1]["t_s"] if ledger.rows else 0.0
    steps = step_results(ledger, guest, end_s)
    downs = [s for s in steps if s["direction"] == "down"]
    lowest = min(downs, key=lambda s: s["target_mib"]) if downs else None
    ax, actual = ledger.series("balloon_actual_mib", guest.name)
    before_end = [y for x, y in zip(ax, actual, strict=True) if x <= run.end_s] or actual
    _, rss = ledger.series("qemu_rss_mib", guest.name)
    _, vmswap = ledger.series("qemu_swap_mib", guest.name)
    end_t = evidence.final.get("daemon_end_t")
    longest, longest_who = longest_stopped(events, end_t)
    dmesg_victims = oom_victims(evidence.dmesg)
    kills = delta(_column(samples, "oom_kill"))
    some, full = delta(_column(samples, "psi_some_total_us")), delta(_column(samples, "psi_full_total_us"))
    return {
        "vm": guest.name,
        "memory_mib": guest.memory_mib,
        "alive": died is None,
        "died": None if died is None else {"t_s": round(died["t"] - run.t0, 1), "reason": died.get("reason"),
                                           "host_oom_kill": died.get("host_oom_kill")},
        "intermediate": guest.intermediate.enabled,
        "swap": str(guest.swap),
        "balloon_start_mib": guest.start_mib,
        "balloon_min_mib": round(min(actual), 1) if actual else None,
        # At the end of the workloads, before the harness gives the memory back to collect.
        "balloon_final_mib": round(before_end[-1], 1) if actual else None,
        "balloon_steps": steps,
        "balloon_target_mib": lowest["target_mib"] if lowest else None,
        "balloon_reached": lowest["reached"] if lowest else None,
        "balloon_seconds_to_target": lowest["seconds_to_reach"] if lowest else None,
        "balloon_closest_mib": lowest["closest_mib"] if lowest else None,
        "oom_kills": int(kills) if kills is not None else len(dmesg_victims),
        "oom_victims": dmesg_victims,
        "protected": protected,
        "protected_completed": bool(protected) and all(w["completed"] for w in protected.values()),
        "protected_items_per_s": _sum([w["items_per_s"] for w in protected.values()]),
        "psi_some_stall_s": round(some / 1e6, 2) if some is not None else None,
        "psi_full_stall_s": round(full / 1e6, 2) if full is not None else None,
        "stops": sum(1 for e in events if e.get("event") == "stop"),
        "protected_stops": protected_stops(guest, events),
        "resumes": sum(1 for e in events if e.get("event") == "resume"),
        "longest_stopped_s": longest,
        "longest_stopped_comm": longest_who,
        "left_stopped": evidence.final.get("left_stopped", []),
        "ssh_longest_silence_s": evidence.final.get("ssh_longest_silence_s"),
        "qemu_rss_peak_mib": round(max(rss), 1) if rss else None,
        "qemu_swap_peak_mib": round(max(vmswap), 1) if vmswap else None,
        "workloads": workloads,
        "guest_samples": len(samples),
    }


#: Usage this close to the budget means the kernel is holding the line (reclaiming, swapping
#: or OOM-killing): the guests together want more than the budget.
AT_LIMIT_SHARE = 0.01


def time_at_limit(ledger: Ledger, budget_mib: float) -> float | None:
    """Seconds during which the budget cgroup's usage was within 1 % (at least 8 MiB) of the
    budget. (cgroup v1's failcnt would say it more directly, but recent kernels no longer
    count it for the v1 memory counter.)"""
    xs, usage = ledger.series("budget_usage_mib")
    if not xs:
        return None
    margin = max(8.0, AT_LIMIT_SHARE * budget_mib)
    return round(sum(xs[i] - xs[i - 1] for i in range(1, len(xs)) if usage[i] >= budget_mib - margin), 1)


def summarize_host(scenario: Scenario, ledger: Ledger, run: RunEvidence) -> dict:
    deaths = [e for e in run.harness_events if e.get("event") == "vm-died"]
    xs, peaks = ledger.series("budget_peak_mib")
    _, usage = ledger.series("budget_usage_mib")
    _, hits = ledger.series("budget_limit_hits")
    _, swap_file = ledger.series("host_swap_used_mib")
    _, kills = ledger.series("host_oom_kills")
    final = next((e for e in reversed(run.harness_events) if e.get("event") == "budget-final"), {})
    per_sample: dict[float, float] = collections.defaultdict(float)  # all QEMUs' VmSwap at each sample
    for row in ledger.rows:
        if row["vm"] != HOST_ROW:
            per_sample[row["t_s"]] += row.get("qemu_swap_mib") or 0.0
    vm_swap = list(per_sample.values())
    budget = scenario.host.memory_budget_mib
    over = time_at_limit(ledger, budget) if budget else None
    peak = final.get("peak_mib", max(peaks) if peaks else (max(usage) if usage else None))
    return {
        "budget_mib": budget,
        "host_swap": str(scenario.host.host_swap),
        "peak_usage_mib": round(peak, 1) if peak is not None else None,
        "budget_held": (peak <= budget) if (peak is not None and budget) else None,
        "host_swap_peak_mib": round(max(swap_file), 1) if swap_file else (round(max(vm_swap), 1) if vm_swap else None),
        "qemu_swap_peak_mib": round(max(vm_swap), 1) if vm_swap else None,
        # The cgroup's counter, or the kernel log's kills where the counter went with a
        # child group (libvirt), whichever saw more.
        "host_oom_kills": int(max(final.get("oom_kills") or 0, max(kills, default=0),
                                  sum(1 for e in run.harness_events if e.get("event") == "host-oom-kill"))),
        "killed_vms": [{"vm": e["vm"], "t_s": round(e["t"] - run.t0, 1), "host_oom_kill": e.get("host_oom_kill")}
                       for e in deaths],
        "time_over_budget_s": over,
        "limit_hits": int(hits[-1]) if hits else None,
    }


def summarize(scenario: Scenario, run: RunEvidence, ledger: Ledger, variant: str, label: str) -> dict:
    guests = {g.name: summarize_guest(g, run.guests.get(g.name) or GuestEvidence(g.name), ledger, run)
              for g in scenario.guests}
    many = len(guests) > 1
    values = list(guests.values())

    def tagged(key: str) -> list[str]:
        return [f"{g['vm']}: {x}" if many else x for g in values for x in g[key]]

    longest = max(values, key=lambda g: g["longest_stopped_s"])
    single = values[0] if not many else None
    with_protected = [g for g in values if g["protected"]]
    summary = {
        "scenario": scenario.name,
        "mode": variant,
        "variant": variant,
        "label": label,
        "policy": scenario.policy.kind.value,
        "intermediate": any(g["intermediate"] for g in values),
        "complete": run.complete,
        "swap": values[0]["swap"],
        "guests": guests,
        "host": summarize_host(scenario, ledger, run),
        # Totals over the guests (for a single guest: its own figures).
        "oom_kills": sum(g["oom_kills"] for g in values),
        "oom_victims": tagged("oom_victims"),
        "protected_completed": bool(with_protected) and all(g["protected_completed"] for g in with_protected),
        "protected_items_per_s": _sum([g["protected_items_per_s"] for g in values]),
        "psi_some_stall_s": _sum([g["psi_some_stall_s"] for g in values]),
        "psi_full_stall_s": _sum([g["psi_full_stall_s"] for g in values]),
        "stops": sum(g["stops"] for g in values),
        "resumes": sum(g["resumes"] for g in values),
        "protected_stops": tagged("protected_stops"),
        "left_stopped": tagged("left_stopped"),
        "longest_stopped_s": longest["longest_stopped_s"],
        "longest_stopped_comm": longest["longest_stopped_comm"],
        "ssh_longest_silence_s": max((g["ssh_longest_silence_s"] or 0 for g in values), default=0),
        "balloon_steps": [s for g in values for s in g["balloon_steps"]],
        "workloads": {n: w for g in values for n, w in g["workloads"].items()},
    }
    for key in ("balloon_target_mib", "balloon_reached", "balloon_seconds_to_target", "balloon_closest_mib"):
        summary[key] = single[key] if single else None
    return summary


def _sum(values: list) -> float | None:
    numbers = [v for v in values if isinstance(v, (int, float))]
    return round(sum(numbers), 3) if numbers else None


@dataclass(frozen=True)
class ExpectationResult:
    name: str
    passed: bool
    detail: str


def check_expectations(scenario: Scenario, summary: dict) -> list[ExpectationResult]:
    ex = scenario.expect
    host = summary["host"]
    results = []
    if ex.protected_completes is not None:
        got = summary["protected_completed"]
        results.append(ExpectationResult("protected_completes", got == ex.protected_completes,
                                         f"protected workload completed: {got}"))
    if ex.no_oom_kill is not None:
        kills = summary["oom_kills"] or 0
        results.append(ExpectationResult("no_oom_kill", (kills == 0) == ex.no_oom_kill,
                                         f"{kills} guest OOM kill(s) {summary['oom_victims'] or ''}".strip()))
    if ex.nothing_left_stopped is not None:
        left = summary["left_stopped"]
        results.append(ExpectationResult("nothing_left_stopped", (not left) == ex.nothing_left_stopped,
                                         f"left stopped at the end: {left or 'none'}"))
    if ex.balloon_reaches_targets is not None:
        steps = summary["balloon_steps"]
        missed = [s for s in steps if not s["reached"]]
        if summary["policy"] != "schedule":
            results.append(ExpectationResult("balloon_reaches_targets", True,
                                             f"not applicable: policy {summary['policy']} has no fixed targets"))
        else:
            results.append(ExpectationResult(
                "balloon_reaches_targets", bool(steps) and (not missed) == ex.balloon_reaches_targets,
                "no balloon step was run" if not steps else "every balloon target reached" if not missed else
                "missed: " + ", ".join(f"{s['vm']} {s['target_mib']:.0f} MiB (closest {s['closest_mib']})"
                                       for s in missed)))
    if ex.protected_never_stopped is not None:
        hits = summary["protected_stops"]
        results.append(ExpectationResult("protected_never_stopped", (not hits) == ex.protected_never_stopped,
                                         f"protected processes stopped: {', '.join(hits) or 'none'}"))
    if ex.max_psi_full_stall_s is not None:
        stall = summary["psi_full_stall_s"]
        results.append(ExpectationResult("max_psi_full_stall_s",
                                         stall is not None and stall <= ex.max_psi_full_stall_s,
                                         f"PSI full stall {stall} s (limit {ex.max_psi_full_stall_s} s)"))
    if ex.host_budget_held is not None:
        held = host["budget_held"]
        results.append(ExpectationResult("host_budget_held", held is ex.host_budget_held,
                                         f"budget cgroup peak {host['peak_usage_mib']} MiB of {host['budget_mib']} MiB"
                                         if host["budget_mib"] else "the scenario has no host budget"))
    if ex.no_host_oom_kill is not None:
        kills = host["host_oom_kills"]
        who = ", ".join(f"{k['vm']} at {k['t_s']} s" for k in host["killed_vms"]) or "none"
        results.append(ExpectationResult("no_host_oom_kill", (kills == 0) == ex.no_host_oom_kill,
                                         f"{kills} host OOM kill(s); VMs that died: {who}"))
    return results
