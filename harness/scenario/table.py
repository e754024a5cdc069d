"""The comparison table (a column per variant, or one column for `run`) and the verdict.

Rows are (label, formatter of one summary). A scenario with one guest keeps the table
`make demo` has always printed; with several guests every guest gets its own rows, and a
scenario with a host budget gets the host's rows at the end.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.table import Table

Row = tuple[str, Callable[[dict], str]]


def _fmt_balloon(s: dict) -> str:
    if s["balloon_target_mib"] is None:
        return "no shrink in schedule"
    if s["balloon_reached"]:
        return f"yes, {s['balloon_target_mib']:.0f} MiB in {s['balloon_seconds_to_target']:.1f} s"
    return f"NO: stuck at {s['balloon_closest_mib']} of {s['balloon_target_mib']:.0f} MiB"


def _fmt_oom(s: dict) -> str:
    if not s["oom_kills"]:
        return "0"
    return f"{s['oom_kills']}: " + ", ".join(s["oom_victims"] or ["?"])


def _fmt_protected(s: dict) -> str:
    if "protected" in s and not s["protected"]:
        return "none here"
    rate = s["protected_items_per_s"]
    done = "completed" if s["protected_completed"] else "DID NOT complete"
    return f"{done}" + (f", {rate:.1f} items/s" if rate is not None else "")


def _fmt_min_final(s: dict) -> str:
    if s.get("balloon_min_mib") is None:
        return "no samples"
    return f"{s['balloon_min_mib']:.0f} / {s['balloon_final_mib']:.0f}"


def _fmt_alive(s: dict) -> str:
    died = s.get("died")
    if not died:
        return "yes"
    who = "host OOM killer" if died.get("host_oom_kill") else (died.get("reason") or "?")[:60]
    return f"NO: died at {died['t_s']} s ({who})"


OOM_ROW: Row = ("guest OOM kills", _fmt_oom)
PROTECTED_ROW: Row = ("protected workload", _fmt_protected)
STOPS_ROW: Row = ("processes stopped / resumed", lambda s: f"{s['stops']} / {s['resumes']}")

SINGLE_GUEST_ROWS: list[Row] = [
    ("balloon target reached", _fmt_balloon),
    OOM_ROW,
    PROTECTED_ROW,
    ("PSI full stall (s)", lambda s: f"{s['psi_full_stall_s']}"),
    ("PSI some stall (s)", lambda s: f"{s['psi_some_stall_s']}"),
    STOPS_ROW,
    ("longest time stopped (s)", lambda s: f"{s['longest_stopped_s']}"
                                           + (f" ({s['longest_stopped_comm']})" if s["longest_stopped_comm"] else "")),
    ("left stopped at the end", lambda s: ", ".join(s["left_stopped"]) or "none"),
    ("longest SSH silence (s)", lambda s: f"{s['ssh_longest_silence_s']}"),
]

GUEST_ROWS: list[Row] = [
    ("alive at the end", _fmt_alive),
    ("balloon min / final (MiB)", _fmt_min_final),
    OOM_ROW,
    PROTECTED_ROW,
    ("PSI full / some stall (s)", lambda s: f"{s['psi_full_stall_s']} / {s['psi_some_stall_s']}"),
    STOPS_ROW,
    ("host swap of its QEMU, peak (MiB)", lambda s: f"{s['qemu_swap_peak_mib']}"),
]


def _fmt_kills(h: dict) -> str:
    if not h["host_oom_kills"]:
        return "0"
    return f"{h['host_oom_kills']}: " + ", ".join(f"{k['vm']} at {k['t_s']} s" for k in h["killed_vms"]
                                                    if k.get("host_oom_kill"))


HOST_ROWS: list[Row] = [
    ("peak budget use (MiB, from the cgroup)", lambda h: f"{h['peak_usage_mib']} of {h['budget_mib']}"
                                                        + ("" if h["budget_held"] in (True, None) else " (EXCEEDED)")),
    ("host swap peak (MiB)", lambda h: f"{h['host_swap_peak_mib']}" if h["host_swap"] != "none" else "no host swap"),
    ("host OOM kills (VM)", _fmt_kills),
    ("time at the budget limit (s)", lambda h: f"{h['time_over_budget_s']}"),
]


def rows_for(summary: dict) -> list[Row]:
    """The rows of a summary's scenario: guest figures, then the host's if it has a budget."""
    guests = list(summary["guests"])
    rows: list[Row] = []
    if len(guests) == 1:
        name = guests[0]
        rows += SINGLE_GUEST_ROWS + [("balloon min / final (MiB)", lambda s: _fmt_min_final(s["guests"][name]))]
        if summary["guests"][name].get("died"):
            rows.append(("alive at the end", lambda s: _fmt_alive(s["guests"][name])))
    else:
        for name in guests:
            rows += [(f"{name} · {label}", _guest_cell(name, fmt)) for label, fmt in GUEST_ROWS]
    if summary["host"]["budget_mib"]:
        rows += [(f"host · {label}", _host_cell(fmt)) for label, fmt in HOST_ROWS]
    return rows


def _guest_cell(name: str, fmt: Callable[[dict], str]) -> Callable[[dict], str]:
    def cell(s: dict) -> str:
        guest = s["guests"].get(name)
        return fmt(guest) if guest else "-"
    return cell


def _host_cell(fmt: Callable[[dict], str]) -> Callable[[dict], str]:
    return lambda s: fmt(s["host"])


def summary_table(summaries: list[dict], title: str | None = None) -> Table:
    """One column per summary (variant), rows from the first one's scenario."""
    first = summaries[0]
    if title is None:
        labels = " vs ".join(s["label"] for s in summaries)
        budget = first["host"]["budget_mib"]
        where = (f"host budget {budget} MiB, host swap {first['host']['host_swap']}" if budget
                 else f"guest swap: {first['swap']}")
        title = f"{first['scenario']}: {labels} ({where})"
    table = Table(title=title)
    table.add_column("")
    for s in summaries:
        table.add_column(s["label"] + ("" if s.get("complete", True) else " (PARTIAL)"), overflow="fold")
    for label, fmt in rows_for(first):
        table.add_row(label, *(_safe(fmt, s) for s in summaries))
    return table


def _safe(fmt: Callable[[dict], str], summary: dict) -> str:
    try:
        return fmt(summary)
    except (KeyError, TypeError, ValueError):
        return "-"  # a partial run may lack a figure


def verdict(base: dict, other: dict) -> str:
    """What `other` changed against `base`, on the figures that matter, with slack for noise."""
    better, worse = [], []

    def compare(name: str, a, b, lower_is_better: bool = True, slack: float = 0.0) -> None:
        if a is None or b is None:
            return
        if (b < a - slack) if lower_is_better else (b > a + slack):
            better.append(name)
        elif (b > a + slack) if lower_is_better else (b < a - slack):
            worse.append(name)

    compare("host OOM kills", base["host"]["host_oom_kills"], other["host"]["host_oom_kills"])
    compare("host swap", base["host"]["host_swap_peak_mib"], other["host"]["host_swap_peak_mib"], slack=32.0)
    compare("guest OOM kills", base["oom_kills"] or 0, other["oom_kills"] or 0)
    compare("PSI full stall", base["psi_full_stall_s"], other["psi_full_stall_s"], slack=1.0)
    compare("protected throughput", base["protected_items_per_s"], other["protected_items_per_s"],
            lower_is_better=False, slack=0.05 * (base["protected_items_per_s"] or 0))
    if base["balloon_reached"] != other["balloon_reached"]:
        (better if other["balloon_reached"] else worse).append("balloon target reached")
    else:
        compare("time to balloon target", base["balloon_seconds_to_target"], other["balloon_seconds_to_target"],
                slack=2.0)
    if other["protected_completed"] and not base["protected_completed"]:
        better.append("protected workload completed")
    if base["protected_completed"] and not other["protected_completed"]:
        worse.append("protected workload completed")
    if other["left_stopped"]:
        worse.append("processes left stopped")
    who = other["label"] if other["label"] != "balloon + Intermediate" else "the Intermediate module"
    if better and not worse:
        return f"Verdict: {who} did better on " + ", ".join(better) + f" than {base['label']}."
    if worse and not better:
        return f"Verdict: {who} did WORSE on " + ", ".join(worse) + f" than {base['label']}."
    if better and worse:
        return f"Verdict: {who} vs {base['label']}: mixed: better on " + ", ".join(better) + "; worse on " + \
            ", ".join(worse) + "."
    return f"Verdict: no measurable difference between {base['label']} and {other['label']}."
