"""Pressure: PSI parsing, the fast signal, the HIGH/CALM rule, both sources."""

from __future__ import annotations

import os
import select
import time

import pytest
from conftest import wait_for

from harness.guest.intermediate.config import Thresholds
from harness.guest.intermediate.fakepsi import AVG_KERNEL, PressureFileWriter
from harness.guest.intermediate.pressure import (
    FilePressureSource,
    PressureLevel,
    PressureReading,
    PsiTriggerSource,
    StallRate,
    parse_psi,
    pressure_level,
)

REAL_PSI = "/proc/pressure/memory"


def reading(fast: float, avg10: float) -> PressureReading:
    return PressureReading(t=0.0, some_avg10=avg10, some_fast=fast, full_avg10=0.0)


def test_parse_psi_memory_format():
    snap = parse_psi(
        "some avg10=12.50 avg60=3.00 avg300=0.10 total=123456\n"
        "full avg10=1.00 avg60=0.50 avg300=0.00 total=999\n"
    )
    assert snap.some.avg10 == 12.5 and snap.some.total == 123456
    assert snap.full is not None and snap.full.total == 999


def test_parse_psi_real_file():
    with open(REAL_PSI) as handle:
        snap = parse_psi(handle.read())
    assert snap.some.total >= 0 and snap.full is not None


@pytest.mark.parametrize("text", ["", "some avg10=1", "some avg10=x avg60=0 avg300=0 total=1", "garbage"])
def test_parse_psi_rejects_malformed(text):
    with pytest.raises(ValueError):
        parse_psi(text)


def test_stall_rate_over_trailing_window():
    rate = StallRate(window=1.0)
    assert rate.add(0.0, 0) == 0.0
    # 50 % stall: 0.5 s of stall per second.
    for i in range(1, 21):
        value = rate.add(i * 0.1, int(i * 0.1 * 0.5e6))
    assert value == pytest.approx(50.0, abs=0.5)
    # Stall stops: after one more window the rate is back to 0.
    for i in range(21, 33):
        value = rate.add(i * 0.1, int(2.0 * 0.5e6))
    assert value == pytest.approx(0.0, abs=0.5)


def test_stall_rate_restarts_when_counter_goes_backwards():
    rate = StallRate(window=1.0)
    rate.add(0.0, 10_000_000)
    assert rate.add(0.5, 0) == 0.0


@pytest.mark.parametrize(
    "fast, avg10, expected",
    [
        (25, 0, PressureLevel.HIGH),  # the fast signal alone is enough
        (6, 30, PressureLevel.HIGH),  # avg10 high and something still stalls
        (1, 30, PressureLevel.BETWEEN),  # avg10 high but nothing stalls now: only lag
        (10, 10, PressureLevel.BETWEEN),  # between the thresholds: hysteresis
        (4, 4, PressureLevel.CALM),
        (4, 6, PressureLevel.BETWEEN),  # calm needs both below resume-below
    ],
)
def test_pressure_level_rules(fast, avg10, expected):
    assert pressure_level(reading(fast, avg10), Thresholds(stop_above=20, resume_below=5)) is expected


def polled(source: FilePressureSource, ok) -> PressureReading | None:
    reading = source.read()
    return reading if reading is not None and ok(reading) else None


def test_file_source_follows_writer(tmp_path):
    path = str(tmp_path / "psi")
    with PressureFileWriter(path) as writer:
        source = FilePressureSource(path, window=0.5, poll_interval=0.05)
        assert source.idle_interval <= 0.1, "a file must be polled at least 10 times a second"
        writer.set(40)
        # Polled as the daemon polls it (every 50 ms) until the written values show.
        wait_for(lambda: polled(source, lambda r: r.some_avg10 == pytest.approx(40, abs=0.1)), 10, 0.05, "avg10 40")
        # total advances consistently with the avg10 written: the fast signal agrees, once a
        # window of readings has passed.
        wait_for(lambda: polled(source, lambda r: r.some_fast == pytest.approx(40, abs=5)), 10, 0.05, "fast 40")
        writer.set(0)
        wait_for(lambda: polled(source, lambda r: r.some_fast < 1 and r.some_avg10 == 0), 10, 0.05, "fast 0")


def test_writer_kernel_model_lags_like_avg10(tmp_path):
    path = str(tmp_path / "psi")
    writer = PressureFileWriter(path, avg_model=AVG_KERNEL)
    writer.set(40)
    # Advance the model by hand (no thread): 7 s of 40 % stall brings avg10 to about 20.
    writer._advance(writer._last + 7.0)
    writer._write()
    snap = parse_psi(open(path).read())
    assert 18 < snap.some.avg10 < 22
    assert snap.some.total == pytest.approx(0.4 * 7e6, rel=0.01)


def test_psi_trigger_registers_and_poll_times_out():
    if not os.path.exists(REAL_PSI):
        pytest.skip("kernel without PSI")
    source = PsiTriggerSource(REAL_PSI, stop_above=20, window=1.0)
    try:
        assert source.fileno() is not None
        # Window 1 s, or 2 s when the kernel refuses sub-2 s windows without CAP_SYS_RESOURCE.
        assert source.window in (1.0, 2.0)
        poller = select.poll()
        poller.register(source.fileno(), select.POLLPRI)
        started = time.monotonic()
        ready = poller.poll(300)
        elapsed = time.monotonic() - started
        if ready:  # the host's real memory pressure fired the trigger: the reading counts it high
            source.on_ready(ready[0][1])
            assert source.read().some_fast >= 20
        else:  # the timeout path, not before the timeout
            r = source.read()
            assert elapsed >= 0.25 and r.some_fast >= 0 and r.some_avg10 >= 0
    finally:
        source.close()


def test_psi_trigger_rejects_bad_window():
    with pytest.raises(ValueError):
        PsiTriggerSource(REAL_PSI, stop_above=20, window=0.1)
