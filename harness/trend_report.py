"""The trend table, for a terminal (rich) or as GitHub-flavoured markdown (a CI job summary).

Rows: the figures that moved at some point (oldest value first, the latest last); figures
that never changed are listed in one line under the table."""

from __future__ import annotations

from collections.abc import Callable

from rich.table import Table

from harness.figures import Direction
from harness.trend import FigureTrend, Flag, ScenarioTrend, TrendSettings

COLUMNS = ("figure", "better", "history (oldest → latest)", "vs previous", "vs median", "noise band", "flag")
BETTER = {Direction.LOWER: "lower", Direction.HIGHER: "higher", Direction.UNKNOWN: ""}


def fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{value:.4g}"


def change(value: float | None, base: float | None) -> str:
    if value is None or base is None:
        return ""
    if base == 0:
        return "±0" if value == 0 else f"{value - base:+.4g}"
    return f"{(value - base) / abs(base) * 100:+.0f} %"


def row(fig: FigureTrend, settings: TrendSettings, bold: Callable[[str], str]) -> list[str]:
    shown = fig.values[-(settings.window + 1):]
    history = " · ".join(fmt(v) for v in shown[:-1])
    history = ("… " if len(fig.values) > len(shown) else "") + history + (" · " if history else "")
    band = fig.band
    return [fig.path, BETTER[fig.direction], history + bold(fmt(fig.latest)),
            change(fig.latest, fig.previous), change(fig.latest, band.median if band else None),
            f"{fmt(band.low)} – {fmt(band.high)}" if band else "",
            bold(fig.flag.value) if fig.flag in (Flag.REGRESSION, Flag.CHANGED) else fig.flag.value]


def headline(trend: ScenarioTrend) -> str:
    bad = trend.flagged(Flag.REGRESSION)
    changed = trend.flagged(Flag.CHANGED)
    good = trend.flagged(Flag.IMPROVEMENT)
    parts = [f"{len(bad)} regression(s)" + (": " + ", ".join(f.path for f in bad) if bad else "")]
    if changed:
        parts.append(f"{len(changed)} changed: " + ", ".join(f.path for f in changed))
    if good:
        parts.append(f"{len(good)} improvement(s): " + ", ".join(f.path for f in good))
    return "; ".join(parts)


def _split(trend: ScenarioTrend) -> tuple[list[FigureTrend], list[FigureTrend]]:
    moving = [f for f in trend.figures if not f.constant or f.flag is not Flag.NONE]
    still = [f for f in trend.figures if f not in moving]
    return moving, still


def _runs_line(trend: ScenarioTrend, settings: TrendSettings) -> str:
    return (f"{len(trend.labels)} runs, oldest {trend.labels[0]}, latest {trend.labels[-1]}; median and band "
            f"of the last {settings.window} before the latest, flagged from {settings.min_history} earlier runs on")


def rich_tables(trends: list[ScenarioTrend], settings: TrendSettings) -> list[Table | str]:
    out: list[Table | str] = []
    for trend in trends:
        moving, still = _split(trend)
        table = Table(title=f"{trend.group}: {headline(trend)}", caption=_runs_line(trend, settings))
        for column in COLUMNS:
            table.add_column(column, overflow="fold")
        for fig in moving:
            style = {Flag.REGRESSION: "red", Flag.IMPROVEMENT: "green", Flag.CHANGED: "yellow"}.get(fig.flag)
            table.add_row(*row(fig, settings, lambda s: f"[bold]{s}[/]" if s else s), style=style)
        out.append(table)
        if still:
            out.append(f"unchanged in every run: {', '.join(f'{f.path} = {fmt(f.latest)}' for f in still)}")
    return out


def markdown(trends: list[ScenarioTrend], settings: TrendSettings) -> str:
    lines: list[str] = []
    for trend in trends:
        moving, still = _split(trend)
        lines += [f"### {trend.group}", "", f"**{headline(trend)}**", "", _runs_line(trend, settings) + ".", "",
                  "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        for fig in moving:
            cells = row(fig, settings, lambda s: f"**{s}**" if s else s)
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        if still:
            lines += ["", "Unchanged in every run: " + ", ".join(f"`{f.path}` = {fmt(f.latest)}" for f in still)]
        lines.append("")
    return "\n".join(lines)
