"""The reaction's fast path: a scan prepared when the early PSI trigger fires serves the stop
that follows (so the stop does not wait for a scan of /proc), but only while it is fresh and
was taken with the units held now. The daemon runs in this process (its loop is not started:
the test plays the early trigger by calling prepare_scan, as the loop does on its POLLPRI)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from conftest import is_stopped, wait_for

from harness.guest.intermediate.cli import build_parser, config_from_args
from harness.guest.intermediate.daemon import Daemon
from harness.guest.intermediate.events import read_events
from harness.guest.intermediate.pressure import EARLY_FRACTION, PsiTriggerSource

REAL_PSI = "/proc/pressure/memory"


@pytest.fixture
def in_process_daemon(psi, workdir) -> Iterator:
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    made: list[Daemon] = []

    def make(window: float, *extra: str) -> Daemon:
        args = build_parser().parse_args([
            "run", "--pressure-file", psi.path, "--scope-pid", str(os.getpid()), "--window", str(window),
            "--state-dir", str(workdir / "state"), "--events", str(workdir / "events.jsonl"),
            "--min-rss", "0", "--no-page-out", "--hold", "0.5", "--stop-interval", "0.3", *extra])
        daemon = Daemon(config_from_args(args))
        made.append(daemon)
        daemon.setup()
        return daemon

    yield make
    for daemon in made:
        daemon.teardown()
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def ticks_until(daemon: Daemon, predicate, timeout: float = 5.0):
    def tick():
        daemon.tick()
        return predicate()
    return wait_for(tick, timeout, interval=0.02, what="the daemon's decision")


def stop_timings(workdir) -> list[dict]:
    return [e["timing_ms"] for e in read_events(str(workdir / "events.jsonl")) if e["event"] == "stop"]


def test_a_prepared_scan_serves_the_stop_that_follows(spawn, psi, in_process_daemon, workdir):
    victim = spawn("prepared")
    daemon = in_process_daemon(window=2.0)
    daemon.prepare_scan()  # what the early trigger does
    prepared_at = time.monotonic()
    psi.set(100)
    ticks_until(daemon, lambda: is_stopped(victim.pid))
    (timing,) = stop_timings(workdir)
    assert 0 <= timing["prepared_age"] <= (time.monotonic() - prepared_at) * 1000, timing
    assert timing["scan"] < 5, "no scan on the way to the stop"
    assert daemon._prepared is None, "used once"


def test_a_stale_prepared_scan_is_not_used(spawn, psi, in_process_daemon, workdir):
    victim = spawn("stale")
    daemon = in_process_daemon(window=0.5)
    daemon.prepare_scan()
    prepared = daemon._prepared
    wait_for(lambda: time.monotonic() - prepared.at > 0.5, 2, what="the prepared scan to age past a window")
    psi.set(100)
    ticks_until(daemon, lambda: is_stopped(victim.pid))
    (timing,) = stop_timings(workdir)
    assert "prepared_age" not in timing, timing


def test_a_scan_prepared_with_other_units_held_is_not_used(spawn, psi, in_process_daemon, workdir):
    first = spawn("heldfirst", rss_mb=20)
    daemon = in_process_daemon(2.0, "--rescan-interval", "60")  # no rescan in between to use it up
    daemon.prepare_scan()  # nothing held yet
    psi.set(100)
    ticks_until(daemon, lambda: is_stopped(first.pid))  # that stop used it
    psi.set(12)
    ticks_until(daemon, lambda: daemon.state.phase.value == "holding")
    second = spawn("heldsecond")
    daemon.prepare_scan()
    # As if it had been taken before the first stop: it knows nothing of the unit held now.
    daemon._prepared = replace(daemon._prepared, held=())
    psi.set(100)
    ticks_until(daemon, lambda: is_stopped(second.pid))
    timings = stop_timings(workdir)
    assert "prepared_age" in timings[0] and "prepared_age" not in timings[1], timings


def test_the_psi_source_registers_an_early_trigger_at_half_the_threshold():
    if not os.path.exists(REAL_PSI):
        pytest.skip("kernel without PSI")
    source = PsiTriggerSource(REAL_PSI, stop_above=20, window=1.0)
    try:
        assert source.early_fileno() is not None and source.early_fileno() != source.fileno()
        assert source.describe()["early"] == 20 * EARLY_FRACTION == 10
    finally:
        source.close()
    assert source.early_fileno() is None


def test_early_fraction_0_registers_no_early_trigger():
    if not os.path.exists(REAL_PSI):
        pytest.skip("kernel without PSI")
    source = PsiTriggerSource(REAL_PSI, stop_above=20, window=1.0, early_fraction=0)
    try:
        assert source.early_fileno() is None and source.describe()["early"] is None
    finally:
        source.close()
