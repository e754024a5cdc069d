"""The figures in a summary JSON: every finite number, named by its path, and which way is
better where the name says so.

Generic over shapes on purpose: today's one-run summary (`summarize`), a comparison
(`{"scenario", "off", "on", "verdict"}`) and per-guest plus host-wide summaries all flatten to
`{"on.psi_full_stall_s": 1.92, "guests.a.oom_kills": 0, ...}`. Booleans, strings and lists of
plain values are not figures; a list of objects is keyed by their "name" where each has one,
else by position (`balloon_steps.0.seconds_to_reach`).
"""

from __future__ import annotations

import math
import re
from enum import Enum

#: Leaf names that are numbers but not measurements.
NOT_FIGURES = frozenset({"exit_status", "pid"})
#: What a scenario test reports per run (JUnit properties): balloon time to target, OOM kills,
#: protected throughput, PSI stall, stops; per guest too where a summary has guests.
KEY_FIGURES = frozenset({"balloon_reached", "balloon_seconds_to_target", "oom_kills", "protected_completed",
                         "protected_items_per_s", "psi_full_stall_s", "psi_some_stall_s", "stops", "resumes",
                         "longest_stopped_s", "ssh_longest_silence_s"})


class Direction(Enum):
    LOWER = "lower"      # lower is better
    HIGHER = "higher"    # higher is better
    UNKNOWN = "?"


# Matched against a figure's last path component; the first match wins.
_DIRECTIONS: tuple[tuple[re.Pattern[str], Direction], ...] = (
    (re.compile(r"items_per_s$|throughput|ops_per_s$"), Direction.HIGHER),
    (re.compile(r"stall_s$|oom|silence_s$|seconds_to|time_to|swap_used|rss|latency|reaction|boot_s$|booted_s$"
                r"|ready_s$|cpu_percent|_vs_naive$"), Direction.LOWER),
)


def direction_of(path: str) -> Direction:
    leaf = path.rsplit(".", 1)[-1]
    for pattern, direction in _DIRECTIONS:
        if pattern.search(leaf):
            return direction
    return Direction.UNKNOWN


def flatten(data: object, prefix: str = "", *, bools: bool = False) -> dict[str, float]:
    """Every finite int/float under `data` (and with `bools`, every boolean), keyed by its
    dotted path, in document order."""
    out: dict[str, float] = {}
    if isinstance(data, dict):
        items = [(str(k), v) for k, v in data.items()]
    elif isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        named = all(isinstance(v.get("name"), str) for v in data)
        items = [(v["name"] if named else str(i), v) for i, v in enumerate(data)]
    else:
        return out
    for key, value in items:
        path = f"{prefix}{key}"
        if key in NOT_FIGURES or (isinstance(value, bool) and not bools):
            continue
        if isinstance(value, int | float):
            if math.isfinite(value):
                out[path] = value
        else:
            out.update(flatten(value, f"{path}.", bools=bools))
    return out


def key_figures(summary: dict) -> dict[str, float]:
    """The figures a CI system should show next to a scenario test, by path."""
    return {path: value for path, value in flatten(summary, bools=True).items()
            if path.rsplit(".", 1)[-1] in KEY_FIGURES}
