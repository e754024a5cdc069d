"""Memory pressure sources: the fast signal from `total` deltas, a polled file, PSI triggers.

The readings and the level rule are in reading.py; in PSI mode a kernel trigger additionally
wakes us the moment the stall in its window crosses the threshold, so we do not have to poll
to notice it.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import select
import time

from .reading import (  # noqa: F401  (re-exported: the pressure vocabulary lives in reading.py)
    IDLE_READING,
    PressureLevel,
    PressureReading,
    PsiLine,
    PsiSnapshot,
    parse_psi,
    pressure_level,
)

log = logging.getLogger(__name__)

PSI_WINDOW_MIN = 0.5
PSI_WINDOW_MAX = 10.0
# Without CAP_SYS_RESOURCE the kernel (>= 6.5) only accepts windows that are multiples of 2 s.
PSI_UNPRIVILEGED_WINDOW_STEP = 2.0
# The early trigger: at this fraction of --stop-above the daemon prepares the scan a stop will
# need, so that the stop itself does not wait for one when the threshold is crossed.
EARLY_FRACTION = 0.5


class StallRate:
    """Stall percentage over a trailing window, from samples of the cumulative `total` (µs)."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, t: float, total_us: int) -> float:
        if self._samples and total_us < self._samples[-1][1]:
            # The counter went backwards (file replaced by a new writer): start over.
            self._samples.clear()
        self._samples.append((t, total_us))
        # Keep exactly one sample at or before the window start as the reference point.
        while len(self._samples) >= 2 and self._samples[1][0] <= t - self.window:
            self._samples.popleft()
        ref_t, ref_total = self._samples[0]
        if t - ref_t <= 0:
            return 0.0
        percent = (total_us - ref_total) / ((t - ref_t) * 1e6) * 100.0
        return max(0.0, min(100.0, percent))


def read_small_file(path: str) -> str:
    """open/read/close without Python's buffered text layer: this runs up to 20 times a second
    for the daemon's whole life, and the plain syscalls are several times cheaper."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096).decode("ascii")
    finally:
        os.close(fd)


class PressureSource:
    """Interface the daemon loop uses; see FilePressureSource and PsiTriggerSource."""

    # Longest sleep while nothing is happening, and the tick while deciding.
    idle_interval: float = 1.0
    busy_interval: float = 0.1

    def fileno(self) -> int | None:
        """An fd to poll() for POLLPRI (the PSI trigger), or None."""
        return None

    def on_ready(self, revents: int) -> None:
        """Called when fileno() was reported ready by poll()."""

    def early_fileno(self) -> int | None:
        """An fd whose POLLPRI says the pressure is half-way to the stop threshold, or None."""
        return None

    def on_early(self, revents: int) -> bool:
        """Called when early_fileno() was reported ready; True if it is a real early warning."""
        return False

    def read(self) -> PressureReading | None:
        """The current reading, or None when there is no valid one (the daemon then fails safe)."""
        raise NotImplementedError

    def describe(self) -> dict[str, object]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class FilePressureSource(PressureSource):
    """Polls a plain file in /proc/pressure/memory format (a file cannot take triggers)."""

    def __init__(self, path: str, window: float, poll_interval: float = 0.05, idle_poll_interval: float = 0.09) -> None:
        self.path = path
        self.window = window
        # While nothing happens ~11 reads a second (the minimum is 10) halve the idle cost; once
        # anything is stopped, 20 reads a second keep the hold and stop timing precise.
        self.idle_interval = max(poll_interval, idle_poll_interval)
        self.busy_interval = poll_interval
        self._rate = StallRate(window)
        self._failing = False
        # Fail early with a clear message if the file is missing or not PSI text.
        parse_psi(read_small_file(path))

    def read(self) -> PressureReading | None:
        now = time.monotonic()
        try:
            snap = parse_psi(read_small_file(self.path))
        except (OSError, ValueError) as exc:
            # No stale reading: a deleted file under pressure kept "high" forever and the daemon
            # went on stopping (issue 11). None makes the decision core resume everything.
            if not self._failing:
                log.warning("cannot read pressure file %s (%s); resuming everything until it is valid again",
                            self.path, exc)
                self._failing = True
                self._rate = StallRate(self.window)  # the next valid reading starts a fresh window
            return None
        if self._failing:
            log.warning("pressure file %s is valid again", self.path)
            self._failing = False
        return PressureReading.of(now, snap, self._rate.add(now, snap.some.total))

    def describe(self) -> dict[str, object]:
        return {"kind": "file", "path": self.path, "window": self.window}


def register_psi_trigger(path: str, stop_above: float, window: float) -> tuple[int, float]:
    """Open `path` and register a `some` trigger of stop_above % over `window` seconds.

    Returns (fd, effective window).  Without CAP_SYS_RESOURCE the kernel accepts only windows
    that are multiples of 2 s; then we round the window up rather than give up on triggers.
    """
    if not PSI_WINDOW_MIN <= window <= PSI_WINDOW_MAX:
        raise ValueError(f"PSI trigger window must be within 0.5..10 s, got {window}")
    candidates = [window]
    step = PSI_UNPRIVILEGED_WINDOW_STEP
    rounded = min(PSI_WINDOW_MAX, step * -(-window // step))
    if rounded != window:
        candidates.append(rounded)
    last_error: OSError | None = None
    for win in candidates:
        window_us = int(win * 1e6)
        stall_us = max(1, int(window_us * stop_above / 100.0))
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            os.write(fd, f"some {stall_us} {window_us}\0".encode("ascii"))
        except OSError as exc:
            os.close(fd)
            last_error = exc
            if exc.errno != errno.EINVAL:
                break
            continue
        if win != window:
            log.warning(
                "PSI trigger window %.1fs refused (no CAP_SYS_RESOURCE?); using %.1fs", window, win
            )
        return fd, win
    assert last_error is not None
    raise last_error


class PsiTriggerSource(PressureSource):
    """Kernel PSI trigger for the fast signal, plus reading avg10/total to follow the averages
    (about once a second while nothing happens: the base class's idle interval)."""

    def __init__(self, path: str, stop_above: float, window: float, early_fraction: float = EARLY_FRACTION) -> None:
        self.path = path
        self.stop_above = stop_above
        self.early = stop_above * early_fraction
        self.fd, self.window = register_psi_trigger(path, stop_above, window)
        self._rate = StallRate(self.window)
        self._fired_at: float | None = None
        self._broken = False
        self.early_fd: int | None = None
        try:
            if 0 < early_fraction < 1:
                self.early_fd = register_psi_trigger(path, self.early, self.window)[0]
        except OSError as exc:  # the main trigger works without it, only later
            log.warning("no early PSI trigger (%s): a stop will wait for its scan", exc.strerror or exc)

    def fileno(self) -> int | None:
        return None if self._broken else self.fd

    def on_ready(self, revents: int) -> None:
        if revents & select.POLLPRI:
            self._fired_at = time.monotonic()
        if revents & (select.POLLERR | select.POLLNVAL | select.POLLHUP):
            # The trigger is gone (e.g. its cgroup was removed): keep following the averages.
            log.error("PSI trigger on %s reported an error; polling the averages only", self.path)
            self._broken = True

    def read(self) -> PressureReading | None:
        now = time.monotonic()
        try:
            snap = parse_psi(read_small_file(self.path))
        except (OSError, ValueError) as exc:
            log.error("cannot read %s: %s", self.path, exc)
            return None
        fast = self._rate.add(now, snap.some.total)
        if self._fired_at is not None and now - self._fired_at < self.window:
            # The kernel saw at least stop_above % stall within its window.
            fast = max(fast, self.stop_above)
        return PressureReading.of(now, snap, fast)

    def early_fileno(self) -> int | None:
        return self.early_fd

    def on_early(self, revents: int) -> bool:
        if revents & (select.POLLERR | select.POLLNVAL | select.POLLHUP):
            if self.early_fd is not None:
                os.close(self.early_fd)
            self.early_fd = None
            return False
        return bool(revents & select.POLLPRI)

    def describe(self) -> dict[str, object]:
        return {"kind": "psi-trigger", "path": self.path, "window": self.window,
                "early": self.early if self.early_fd is not None else None}

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.early_fd is not None:
            os.close(self.early_fd)
            self.early_fd = None
