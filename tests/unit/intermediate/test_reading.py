"""Pressure readings (reading.py): the PSI text, the values the core decides on and logs, and the
HIGH/BETWEEN/CALM rule at its boundaries. Pure: no file, no clock."""

from __future__ import annotations

import pytest

from harness.guest.intermediate.config import Thresholds
from harness.guest.intermediate.reading import (
    PressureLevel,
    PressureReading,
    PsiLine,
    PsiSnapshot,
    parse_psi,
    pressure_level,
)

SOME = "some avg10=1.50 avg60=2.25 avg300=3.00 total=4567"
FULL = "full avg10=0.50 avg60=0.25 avg300=0.10 total=89"


def test_every_field_of_both_lines_is_read_and_blank_lines_are_skipped():
    assert parse_psi(f"{SOME}\n\n{FULL}\n") == PsiSnapshot(some=PsiLine(1.5, 2.25, 3.0, 4567), full=PsiLine(0.5, 0.25, 0.1, 89))
    assert parse_psi(SOME).full is None, "cpu-style files have no full line"


@pytest.mark.parametrize("value", ["0", "0.00", "100", "100.00"])
def test_a_percentage_from_0_to_100_is_accepted(value):
    assert parse_psi(f"some avg10={value} avg60=0 avg300=0 total=0").some.avg10 == float(value)


@pytest.mark.parametrize("value", ["100.01", "150", "-0.01", "nan", "inf", "-inf"])
def test_anything_else_is_not_a_percentage(value):
    line = f"some avg10={value} avg60=0 avg300=0 total=0"
    with pytest.raises(ValueError, match=f"malformed PSI line {line!r}") as info:
        parse_psi(line)
    assert str(info.value.__cause__) == f"not a percentage: {value}"


@pytest.mark.parametrize("text, message", [
    ("some avg10", "malformed PSI field 'avg10'"),
    ("some avg10=1 avg60=1 avg300=1", "malformed PSI line 'some avg10=1 avg60=1 avg300=1'"),
    ("some avg10=1 avg60=1 avg300=1 total=-1", "malformed PSI line 'some avg10=1 avg60=1 avg300=1 total=-1'"),
    (FULL, "PSI text has no 'some' line"),
    ("", "PSI text has no 'some' line"),
])
def test_malformed_text_says_what_is_wrong(text, message):
    # These messages reach the user: "--pressure-file X is not in PSI format: <message>".
    with pytest.raises(ValueError) as info:
        parse_psi(text)
    assert str(info.value) == message


def test_a_reading_from_a_snapshot_and_the_fast_signal():
    with_full, without = parse_psi(f"{SOME}\n{FULL}"), parse_psi(SOME)
    assert PressureReading.of(7.5, with_full, 33.3) == PressureReading(t=7.5, some_avg10=1.5, some_fast=33.3, full_avg10=0.5)
    assert PressureReading.of(7.5, without, 33.3) == PressureReading(t=7.5, some_avg10=1.5, some_fast=33.3, full_avg10=0.0)


def test_what_is_decided_on_is_what_is_logged():
    raw = PressureReading(t=3.0, some_avg10=12.3456, some_fast=0.005, full_avg10=1.234)
    assert raw.quantized() == PressureReading(t=3.0, some_avg10=12.35, some_fast=0.01, full_avg10=1.23)
    assert raw.as_list() == [12.35, 0.01, 1.23]
    assert raw.as_event() == {"some_avg10": 12.35, "some_fast": 0.01, "full_avg10": 1.23}
    assert PressureReading.from_list(raw.as_list(), t=3.0) == raw.quantized()
    assert PressureReading.from_list([1, 2, 3]) == PressureReading(t=0.0, some_avg10=1.0, some_fast=2.0, full_avg10=3.0)


TH = Thresholds(stop_above=20, resume_below=5)


@pytest.mark.parametrize("fast, avg10, level", [
    (20, 0, PressureLevel.HIGH),  # fast exactly at stop-above
    (19.99, 0, PressureLevel.BETWEEN),
    (5, 20, PressureLevel.HIGH),  # avg10 at stop-above, fast exactly at resume-below
    (4.99, 20, PressureLevel.BETWEEN),  # avg10 high but nothing stalls now: lag
    (5, 19.99, PressureLevel.BETWEEN),
    (5, 0, PressureLevel.BETWEEN),  # calm needs fast below resume-below ...
    (0, 5, PressureLevel.BETWEEN),  # ... and avg10 below it too
    (4.99, 4.99, PressureLevel.CALM),
])
def test_the_level_rule_at_its_boundaries(fast, avg10, level):
    reading = PressureReading(t=0.0, some_avg10=avg10, some_fast=fast, full_avg10=0.0)
    assert pressure_level(reading, TH) is level
    assert pressure_level(None, TH) is PressureLevel.UNKNOWN
