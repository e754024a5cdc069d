"""`compare --repeat N`: each variant run N times, each figure reported as its median with its
range (min–max) over the runs. Runs on a shared TCG host differ a lot (README: the demo's
protected throughput ranged 32–101 items/s over five runs), so one run per variant can
mislead; the median of a few is what a verdict should rest on."""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from rich.table import Table


@dataclass(frozen=True)
class Figure:
    key: tuple[str, ...]
    label: str
    digits: int = 1


#: The numeric figures a repeated comparison aggregates (the table's rows, in order).
FIGURES = (
    Figure(("balloon_seconds_to_target",), "time to balloon target (s)"),
    Figure(("oom_kills",), "guest OOM kills", 0),
    Figure(("protected_items_per_s",), "protected throughput (items/s)"),
    Figure(("psi_full_stall_s",), "PSI full stall (s)", 2),
    Figure(("psi_some_stall_s",), "PSI some stall (s)", 2),
    Figure(("stops",), "processes stopped", 0),
    Figure(("resumes",), "processes resumed", 0),
    Figure(("longest_stopped_s",), "longest time stopped (s)"),
    Figure(("ssh_longest_silence_s",), "longest SSH silence (s)"),
    Figure(("host", "peak_usage_mib"), "host · peak budget use (MiB)"),
    Figure(("host", "host_swap_peak_mib"), "host · host swap peak (MiB)"),
    Figure(("host", "host_oom_kills"), "host · host OOM kills", 0),
    Figure(("host", "time_over_budget_s"), "host · time at the budget limit (s)"),
)
#: Yes/no figures: counted ("2 of 3"); a median summary holds them only if every run did.
FLAGS = ((("balloon_reached",), "balloon target reached"), (("protected_completed",), "protected workload completed"))


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float
    #: Per run, None where that run lacked the figure.
    values: tuple[float | None, ...]

    def text(self, digits: int = 1) -> str:
        def fmt(x: float) -> str:
            return f"{x:.{digits}f}"
        if self.low == self.high:
            return fmt(self.median)
        return f"{fmt(self.median)} ({fmt(self.low)}–{fmt(self.high)})"

    def as_dict(self) -> dict:
        return {"median": self.median, "min": self.low, "max": self.high, "values": list(self.values)}


def _get(summary: dict, key: tuple[str, ...]):
    value: object = summary
    for part in key:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def spread(values: list[float | None]) -> Spread | None:
    """Median and range of the runs that have the figure; None if none has it."""
    present = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not present:
        return None
    return Spread(statistics.median(present), min(present), max(present), tuple(values))


def aggregate(summaries: list[dict]) -> dict[str, Spread | None]:
    """{figure name (dotted): its spread over the runs}."""
    return {".".join(f.key): spread([_get(s, f.key) for s in summaries]) for f in FIGURES}


def median_summary(summaries: list[dict]) -> dict:
    """A summary shaped like one run's (so the verdict can judge it): each numeric figure its
    median, each yes/no figure true only if true in every run, and anything left stopped in
    any run kept."""
    merged = copy.deepcopy(summaries[0])
    for figure in FIGURES:
        s = spread([_get(x, figure.key) for x in summaries])
        target = merged
        for part in figure.key[:-1]:
            target = target.setdefault(part, {})
        target[figure.key[-1]] = None if s is None else s.median
    for key, _label in FLAGS:
        merged[key[-1]] = all(bool(_get(x, key)) for x in summaries)
    merged["left_stopped"] = sorted({p for x in summaries for p in x.get("left_stopped") or []})
    merged["repeat"] = len(summaries)
    return merged


def repeat_table(columns: list[tuple[str, list[dict]]], title: str) -> Table:
    """One column per variant (label, its runs), each cell the median (min–max)."""
    table = Table(title=title)
    table.add_column("")
    for label, runs in columns:
        table.add_column(f"{label} ({len(runs)} runs)", overflow="fold")
    rows: list[tuple[str, Callable[[list[dict]], str]]] = []
    for key, label in FLAGS:
        rows.append((label, lambda runs, key=key: f"{sum(bool(_get(s, key)) for s in runs)} of {len(runs)}"))
    for figure in FIGURES:
        if figure.key[0] == "host" and not any(_get(s, ("host", "budget_mib")) for _, runs in columns for s in runs):
            continue  # no host budget: no host rows, as in the one-run table
        rows.append((figure.label, lambda runs, f=figure: _cell(spread([_get(s, f.key) for s in runs]), f.digits)))
    rows.append(("left stopped at the end (runs)",
                 lambda runs: f"{sum(bool(s.get('left_stopped')) for s in runs)} of {len(runs)}"))
    for label, cell in rows:
        table.add_row(label, *(cell(runs) for _, runs in columns))
    return table


def _cell(s: Spread | None, digits: int) -> str:
    return "-" if s is None else s.text(digits)


def group_runs(summaries: list[dict]) -> dict[str, list[dict]]:
    """{variant: its runs}, variants in the order of their first run."""
    groups: dict[str, list[dict]] = {}
    for s in summaries:
        groups.setdefault(s["variant"], []).append(s)
    return groups


def judged(groups: dict[str, list[dict]]) -> dict[str, dict]:
    """Per variant, what a verdict judges: its one run, or the median summary of its runs."""
    return {v: runs[0] if len(runs) == 1 else median_summary(runs) for v, runs in groups.items()}
