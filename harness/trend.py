"""Trends: the same scenario's figures over many runs (nightly archives), each figure's latest
value against the previous run and against the median of the last N, flagged only when it
leaves a noise band learnt from the figure's own history.

Why learnt and not fixed: under TCG on shared cores a figure varies by 2x from run to run, so
any fixed threshold either cries wolf or misses. The band is the median of the last `window`
runs +- `k` robust standard deviations (1.4826 x the median absolute deviation, which one wild
night does not inflate), widened for short histories by (n+1)/(n-2) (a few nights can show a
small spread by chance; close to the Student t factor of a prediction interval at these n), and
never narrower than `rel_floor` of the median; nothing is flagged before `min_history` earlier
runs exist. Positive figures are judged on a log scale, because
their noise is a factor (half or twice as fast), not an amount; figures that are zero or
negative somewhere in the history (counters such as OOM kills) on a linear one.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from harness.errors import ConfigError
from harness.figures import Direction, direction_of, flatten

SUMMARY = "summary.json"
MAD_TO_SIGMA = 1.4826  # the MAD of normal data times this is its standard deviation


@dataclass(frozen=True)
class TrendSettings:
    window: int = 10        # the median and band come from at most this many earlier runs
    min_history: int = 5    # earlier runs needed before anything is flagged (at least 3)
    k: float = 3.0          # band half-width in robust standard deviations
    rel_floor: float = 0.10  # ... and at least this share of the median

    def __post_init__(self) -> None:
        if not (self.window >= self.min_history >= 3 and 0 < self.k < math.inf and 0 <= self.rel_floor < 1):
            raise ConfigError(f"trend: window {self.window}, min-history {self.min_history} and k {self.k} "
                              f"do not fit: k must be positive and window >= min-history >= 3.",
                              fix="for example --window 10 --min-history 5 -k 3.")


@dataclass(frozen=True)
class Summary:
    path: Path
    label: str
    group: str               # what makes runs comparable: scenario and kind of summary
    figures: dict[str, float]


class Flag(Enum):
    NONE = ""
    REGRESSION = "REGRESSION"
    IMPROVEMENT = "improvement"
    CHANGED = "changed"              # beyond the band, and the figure has no better direction
    SHORT = "short history"          # too few earlier runs to learn a band


@dataclass(frozen=True)
class Band:
    median: float   # of the earlier runs (plain median: what "vs median" compares with)
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class FigureTrend:
    path: str
    direction: Direction
    values: tuple[float | None, ...]   # one per run, oldest first; None where a run lacks it
    band: Band | None
    flag: Flag

    @property
    def latest(self) -> float | None:
        return self.values[-1]

    @property
    def previous(self) -> float | None:
        earlier = [v for v in self.values[:-1] if v is not None]
        return earlier[-1] if earlier else None

    @property
    def constant(self) -> bool:
        return len({v for v in self.values if v is not None}) <= 1 and None not in self.values


@dataclass(frozen=True)
class ScenarioTrend:
    group: str
    labels: tuple[str, ...]
    figures: tuple[FigureTrend, ...]

    def flagged(self, *flags: Flag) -> list[FigureTrend]:
        return [f for f in self.figures if f.flag in flags]


def _centre_and_half_width(values: Sequence[float], settings: TrendSettings, floor: float) -> tuple[float, float]:
    centre = statistics.median(values)
    mad = statistics.median(abs(v - centre) for v in values)
    n = len(values)
    short = (n + 1) / max(n - 2, 1)  # below 3 runs it only sizes the band shown: min_history >= 3
    return centre, max(settings.k * MAD_TO_SIGMA * mad * short, floor)


def noise_band(history: Sequence[float], settings: TrendSettings) -> Band:
    median = statistics.median(history)
    if min(history) > 0:
        centre, half = _centre_and_half_width([math.log(v) for v in history], settings,
                                              math.log1p(settings.rel_floor))
        return Band(median, math.exp(centre - half), math.exp(centre + half))
    centre, half = _centre_and_half_width(history, settings, settings.rel_floor * abs(median))
    return Band(median, centre - half, centre + half)


def judge(direction: Direction, band: Band, value: float) -> Flag:
    if band.contains(value):
        return Flag.NONE
    if direction is Direction.UNKNOWN:
        return Flag.CHANGED
    worse = value > band.high if direction is Direction.LOWER else value < band.low
    return Flag.REGRESSION if worse else Flag.IMPROVEMENT


def assess(path: str, values: Sequence[float | None], settings: TrendSettings) -> FigureTrend:
    """One figure over the runs (oldest first): the band from the earlier runs, the flag of
    the latest."""
    direction = direction_of(path)
    history = [v for v in values[:-1] if v is not None][-settings.window:]
    band = noise_band(history, settings) if history else None
    latest = values[-1] if values else None
    if latest is None or band is None:
        flag = Flag.NONE
    elif len(history) < settings.min_history:
        flag = Flag.SHORT
    else:
        flag = judge(direction, band, latest)
    return FigureTrend(path, direction, tuple(values), band, flag)


def build_trends(summaries: Sequence[Summary], settings: TrendSettings) -> list[ScenarioTrend]:
    """Group comparable summaries (in the order given: oldest first) and assess every figure."""
    groups: dict[str, list[Summary]] = {}
    for summary in summaries:
        groups.setdefault(summary.group, []).append(summary)
    trends = []
    for group, runs in groups.items():
        paths: dict[str, None] = {}
        for run in runs:
            paths.update(dict.fromkeys(run.figures))
        figures = tuple(assess(p, [run.figures.get(p) for run in runs], settings) for p in paths)
        trends.append(ScenarioTrend(group, tuple(r.label for r in runs), figures))
    return trends


# == finding and reading summaries ================================================================

def find_summaries(args: Sequence[Path]) -> list[Path]:
    """SUMMARY.json files as given; for a folder, every summary.json under it (sorted by path,
    which orders time-stamped run folders), skipping those inside a folder that has its own:
    a comparison's off/ and on/ runs are part of its summary."""
    found: list[Path] = []
    for arg in args:
        if arg.is_file():
            found.append(arg)
        elif arg.is_dir():
            inside = sorted(arg.rglob(SUMMARY))
            found += [p for p in inside if not any((parent / SUMMARY).is_file()
                                                   for parent in p.parent.parents if parent.is_relative_to(arg))]
        else:
            raise ConfigError(f"trend: {arg} is neither a summary JSON file nor a folder.",
                              fix="pass summary.json files or run folders (for example runs/*).")
    if not found:
        raise ConfigError(f"trend: no {SUMMARY} under {', '.join(map(str, args))}.",
                          fix="pass the run folders of `balloon-harness run/compare/demo` or their summary files.")
    return found


def group_of(data: dict) -> str:
    scenario = str(data.get("scenario") or "?")
    if isinstance(data.get("off"), dict) and isinstance(data.get("on"), dict):
        return f"{scenario} (compare)"
    return f"{scenario} ({data['mode']})" if isinstance(data.get("mode"), str) else scenario


def read_summary(path: Path, label: str) -> Summary:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"trend: cannot read {path}: {exc}.",
                          fix="pass summary JSON files written by balloon-harness (or remove this one).") from None
    if not isinstance(data, dict):
        raise ConfigError(f"trend: {path} holds a JSON {type(data).__name__}, not an object of figures.",
                          fix="pass summary JSON files written by balloon-harness.")
    return Summary(path, label, group_of(data), flatten(data))


def labels_for(paths: Sequence[Path]) -> list[str]:
    """Each run's folder name; where two share one, their paths below the common folder."""
    names = [p.parent.name or str(p) for p in paths]
    if len(set(names)) == len(names):
        return names
    resolved = [p.resolve() for p in paths]
    common = Path(*Path(resolved[0]).parts[:_common_parts(resolved)])
    return [str(p.parent.relative_to(common)) if p.parent != common else p.name for p in resolved]


def _common_parts(paths: Sequence[Path]) -> int:
    n = 0
    for parts in zip(*(p.parent.parts for p in paths), strict=False):
        if len(set(parts)) != 1:
            break
        n += 1
    return n


def load(args: Sequence[Path]) -> list[Summary]:
    paths = find_summaries(args)
    return [read_summary(p, label) for p, label in zip(paths, labels_for(paths), strict=True)]
