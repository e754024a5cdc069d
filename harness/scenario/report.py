"""From a run's evidence to figures: the summary JSON, expectations, and the side-by-side
comparison of plain ballooning with ballooning plus the Intermediate module."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rich.table import Table

from harness.ledger import Ledger
from harness.scenario.model import Scenario

OOM_LINE = re.compile(r"Out of memory: Killed process (\d+) \(([^)]*)\)")


def oom_victims(dmesg: str) -> list[str]:
    return [f"{comm} ({pid})" for pid, comm in OOM_LINE.findall(dmesg)]


def stall_seconds(ledger: Ledger, column: str) -> float | None:
    _, ys = ledger.series(column)
    return round((ys[-1] - ys[0]) / 1e6, 2) if len(ys) >= 2 else None


def counter_delta(ledger: Ledger, column: str) -> int | None:
    _, ys = ledger.series(column)
    return int(ys[-1] - ys[0]) if len(ys) >= 2 else None


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


def protected_stops(scenario: Scenario, events: list[dict]) -> list[str]:
    """Stop decisions that hit a protected workload (its comm is its name, workers name-wN)."""
    names = {w.name[:15] for w in scenario.protected}
    hits = []
    for event in events:
        comm = event.get("comm") or ""
        if event.get("event") == "stop" and (comm in names or any(comm.startswith(f"{n}-w"[:15]) for n in names)):
            hits.append(f"{comm} ({event.get('pid')})")
    return hits


def summarize(scenario: Scenario, mode: str, ledger: Ledger, balloon_steps: list[dict],
              workloads: dict[str, dict], daemon_events: list[dict], dmesg: str,
              left_stopped: list[str], ssh_longest_silence_s: float, daemon_end_t: float | None,
              swap: str) -> dict:
    downs = [s for s in balloon_steps if s.get("direction") == "down"]
    lowest = min(downs, key=lambda s: s["target_mib"]) if downs else None
    protected = {n: w for n, w in workloads.items() if w.get("role") == "protected"}
    longest, longest_who = longest_stopped(daemon_events, daemon_end_t)
    oom = counter_delta(ledger, "oom_kill")
    return {
        "scenario": scenario.name,
        "mode": mode,
        "intermediate": mode == "on",
        "swap": swap,
        "balloon_steps": balloon_steps,
        "balloon_target_mib": lowest["target_mib"] if lowest else None,
        "balloon_reached": lowest["reached"] if lowest else None,
        "balloon_seconds_to_target": lowest.get("seconds_to_reach") if lowest else None,
        "balloon_closest_mib": lowest.get("closest_mib") if lowest else None,
        "oom_kills": oom if oom is not None else len(oom_victims(dmesg)),
        "oom_victims": oom_victims(dmesg),
        "protected": protected,
        "protected_completed": bool(protected) and all(w.get("completed") for w in protected.values()),
        "protected_items_per_s": _sum([w.get("items_per_s") for w in protected.values()]),
        "psi_some_stall_s": stall_seconds(ledger, "psi_some_total_us"),
        "psi_full_stall_s": stall_seconds(ledger, "psi_full_total_us"),
        "stops": sum(1 for e in daemon_events if e.get("event") == "stop"),
        "protected_stops": protected_stops(scenario, daemon_events),
        "resumes": sum(1 for e in daemon_events if e.get("event") == "resume"),
        "longest_stopped_s": longest,
        "longest_stopped_comm": longest_who,
        "left_stopped": left_stopped,
        "ssh_longest_silence_s": round(ssh_longest_silence_s, 1),
        "workloads": workloads,
    }


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
    results = []
    if ex.protected_completes is not None:
        got = summary["protected_completed"]
        results.append(ExpectationResult("protected_completes", got == ex.protected_completes,
                                         f"protected workload completed: {got}"))
    if ex.no_oom_kill is not None:
        kills = summary["oom_kills"] or 0
        results.append(ExpectationResult("no_oom_kill", (kills == 0) == ex.no_oom_kill,
                                         f"{kills} OOM kill(s) {summary['oom_victims'] or ''}".strip()))
    if ex.nothing_left_stopped is not None:
        left = summary["left_stopped"]
        results.append(ExpectationResult("nothing_left_stopped", (not left) == ex.nothing_left_stopped,
                                         f"left stopped at the end: {left or 'none'}"))
    if ex.balloon_reaches_targets is not None:
        missed = [s for s in summary["balloon_steps"] if not s["reached"]]
        results.append(ExpectationResult(
            "balloon_reaches_targets", (not missed) == ex.balloon_reaches_targets,
            "every balloon target reached" if not missed else
            "missed: " + ", ".join(f"{s['target_mib']:.0f} MiB (closest {s['closest_mib']:.0f})" for s in missed)))
    if ex.protected_never_stopped is not None:
        hits = summary["protected_stops"]
        results.append(ExpectationResult("protected_never_stopped", (not hits) == ex.protected_never_stopped,
                                         f"protected processes stopped: {', '.join(hits) or 'none'}"))
    if ex.max_psi_full_stall_s is not None:
        stall = summary["psi_full_stall_s"]
        results.append(ExpectationResult("max_psi_full_stall_s",
                                         stall is not None and stall <= ex.max_psi_full_stall_s,
                                         f"PSI full stall {stall} s (limit {ex.max_psi_full_stall_s} s)"))
    return results


def _fmt_balloon(s: dict) -> str:
    if s["balloon_target_mib"] is None:
        return "no shrink in schedule"
    if s["balloon_reached"]:
        return f"yes, {s['balloon_target_mib']:.0f} MiB in {s['balloon_seconds_to_target']:.1f} s"
    return f"NO: stuck at {s['balloon_closest_mib']:.0f} of {s['balloon_target_mib']:.0f} MiB"


def _fmt_oom(s: dict) -> str:
    if not s["oom_kills"]:
        return "0"
    return f"{s['oom_kills']}: " + ", ".join(s["oom_victims"] or ["?"])


def _fmt_protected(s: dict) -> str:
    rate = s["protected_items_per_s"]
    done = "completed" if s["protected_completed"] else "DID NOT complete"
    return f"{done}" + (f", {rate:.1f} items/s" if rate is not None else "")


ROWS = [
    ("balloon target reached", _fmt_balloon),
    ("guest OOM kills", _fmt_oom),
    ("protected workload", _fmt_protected),
    ("PSI full stall (s)", lambda s: f"{s['psi_full_stall_s']}"),
    ("PSI some stall (s)", lambda s: f"{s['psi_some_stall_s']}"),
    ("processes stopped / resumed", lambda s: f"{s['stops']} / {s['resumes']}"),
    ("longest time stopped (s)", lambda s: f"{s['longest_stopped_s']}"
                                           + (f" ({s['longest_stopped_comm']})" if s["longest_stopped_comm"] else "")),
    ("left stopped at the end", lambda s: ", ".join(s["left_stopped"]) or "none"),
    ("longest SSH silence (s)", lambda s: f"{s['ssh_longest_silence_s']}"),
]


def comparison_table(off: dict, on: dict) -> Table:
    table = Table(title=f"{off['scenario']}: plain ballooning vs ballooning + Intermediate module "
                        f"(guest swap: {off['swap']})")
    table.add_column("")
    table.add_column("balloon only", overflow="fold")
    table.add_column("balloon + Intermediate", overflow="fold")
    for label, fmt in ROWS:
        table.add_row(label, fmt(off), fmt(on))
    return table


def verdict(off: dict, on: dict) -> str:
    better, worse = [], []

    def compare(name: str, a, b, lower_is_better: bool = True, slack: float = 0.0) -> None:
        if a is None or b is None:
            return
        if (b < a - slack) if lower_is_better else (b > a + slack):
            better.append(name)
        elif (b > a + slack) if lower_is_better else (b < a - slack):
            worse.append(name)

    compare("OOM kills", off["oom_kills"] or 0, on["oom_kills"] or 0)
    compare("PSI full stall", off["psi_full_stall_s"], on["psi_full_stall_s"], slack=1.0)
    compare("protected throughput", off["protected_items_per_s"], on["protected_items_per_s"],
            lower_is_better=False, slack=0.05 * (off["protected_items_per_s"] or 0))
    if off["balloon_reached"] != on["balloon_reached"]:
        (better if on["balloon_reached"] else worse).append("balloon target reached")
    else:
        compare("time to balloon target", off["balloon_seconds_to_target"], on["balloon_seconds_to_target"], slack=2.0)
    if on["protected_completed"] and not off["protected_completed"]:
        better.append("protected workload completed")
    if off["protected_completed"] and not on["protected_completed"]:
        worse.append("protected workload completed")
    if on["left_stopped"]:
        worse.append("processes left stopped")
    if better and not worse:
        return "Verdict: the Intermediate module did better on " + ", ".join(better) + "."
    if worse and not better:
        return "Verdict: the Intermediate module did WORSE on " + ", ".join(worse) + "."
    if better and worse:
        return ("Verdict: mixed: better on " + ", ".join(better) + "; worse on " + ", ".join(worse) + ".")
    return "Verdict: no measurable difference between the two runs."
