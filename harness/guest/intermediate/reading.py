"""Pressure readings and the HIGH/BETWEEN/CALM rule: pure values and functions, no I/O.

Why two signals: `some avg10` is an exponentially decaying 10 s average and lags badly (about
7 s to climb from 0 to 20 % under 40 % stall, about 20 s to decay from 40 % to 5 %).  The *fast*
signal is the stall percentage over the last `window` seconds, computed from the cumulative
`total` (µs) counter (pressure.py).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from .config import Thresholds


@dataclass(frozen=True)
class PsiLine:
    avg10: float
    avg60: float
    avg300: float
    total: int  # cumulative stall time in microseconds


@dataclass(frozen=True)
class PsiSnapshot:
    some: PsiLine
    full: PsiLine | None


def _percentage(text: str) -> float:
    value = float(text)
    # nan compares false with everything: one nan would freeze every decision (issue 11).
    if not math.isfinite(value) or not 0.0 <= value <= 100.0:
        raise ValueError(f"not a percentage: {text}")
    return value


def parse_psi(text: str) -> PsiSnapshot:
    """Parse the /proc/pressure/<resource> format; raise ValueError if it is not that (including
    averages that are not finite percentages and negative totals)."""
    lines: dict[str, PsiLine] = {}
    for raw in text.splitlines():
        parts = raw.split()
        if not parts:
            continue
        kind, fields = parts[0], {}
        for part in parts[1:]:
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"malformed PSI field {part!r}")
            fields[key] = value
        try:
            line = PsiLine(
                avg10=_percentage(fields["avg10"]),
                avg60=_percentage(fields["avg60"]),
                avg300=_percentage(fields["avg300"]),
                total=int(fields["total"]),
            )
        except (KeyError, ValueError) as exc:
            raise ValueError(f"malformed PSI line {raw!r}") from exc
        if line.total < 0:
            raise ValueError(f"malformed PSI line {raw!r}")
        lines[kind] = line
    if "some" not in lines:
        raise ValueError("PSI text has no 'some' line")
    return PsiSnapshot(some=lines["some"], full=lines.get("full"))


@dataclass(frozen=True)
class PressureReading:
    t: float  # time.monotonic() of the reading
    some_avg10: float
    some_fast: float
    full_avg10: float

    @classmethod
    def of(cls, now: float, snap: PsiSnapshot, fast: float) -> PressureReading:
        """A reading from a PSI snapshot and the fast signal computed alongside it."""
        return cls(t=now, some_avg10=snap.some.avg10, some_fast=fast,
                   full_avg10=snap.full.avg10 if snap.full else 0.0)

    def quantized(self) -> PressureReading:
        """Rounded to PSI's own precision (0.01 %): the values the decision core sees are
        exactly the values the event log records, so a replay decides the same."""
        return PressureReading(t=self.t, some_avg10=round(self.some_avg10, 2),
                               some_fast=round(self.some_fast, 2), full_avg10=round(self.full_avg10, 2))

    def as_event(self) -> dict[str, float]:
        return {
            "some_avg10": round(self.some_avg10, 2),
            "some_fast": round(self.some_fast, 2),
            "full_avg10": round(self.full_avg10, 2),
        }

    def as_list(self) -> list[float]:
        """The compact form of the event log's input records: [some_avg10, some_fast, full_avg10]."""
        return [round(self.some_avg10, 2), round(self.some_fast, 2), round(self.full_avg10, 2)]

    @classmethod
    def from_list(cls, values: list[float], t: float = 0.0) -> PressureReading:
        some_avg10, some_fast, full_avg10 = (float(v) for v in values)
        return cls(t=t, some_avg10=some_avg10, some_fast=some_fast, full_avg10=full_avg10)


IDLE_READING = PressureReading(t=0.0, some_avg10=0.0, some_fast=0.0, full_avg10=0.0)


class PressureLevel(enum.Enum):
    HIGH = "high"
    BETWEEN = "between"
    CALM = "calm"
    UNKNOWN = "unknown"  # no valid reading (the pressure file is unreadable or malformed)


def pressure_level(reading: PressureReading | None, thresholds: Thresholds) -> PressureLevel:
    """The decision rule (documented in README.md).

    HIGH:  fast >= stop_above, or avg10 >= stop_above while fast >= resume_below
           (a high avg10 with nothing stalling right now is only the average's lag).
    CALM:  fast < resume_below and avg10 < resume_below.
    Anything else is BETWEEN: neither stop more nor resume (hysteresis).
    UNKNOWN: no reading.
    """
    if reading is None:
        return PressureLevel.UNKNOWN
    fast, slow = reading.some_fast, reading.some_avg10
    if fast >= thresholds.stop_above or (
        slow >= thresholds.stop_above and fast >= thresholds.resume_below
    ):
        return PressureLevel.HIGH
    if fast < thresholds.resume_below and slow < thresholds.resume_below:
        return PressureLevel.CALM
    return PressureLevel.BETWEEN
