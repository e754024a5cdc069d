"""Deadlines with readiness signals. There is no bare sleep in the harness: every wait names
what it waits for, polls a real condition and, on timeout, says what it saw."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from harness.errors import WaitTimeout

T = TypeVar("T")


@dataclass
class Deadline:
    """A point in monotonic time. `remaining()` never goes below zero."""

    seconds: float
    started: float = field(default_factory=time.monotonic)

    @property
    def at(self) -> float:
        return self.started + self.seconds

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.at

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    context: Callable[[], str] | None = None,
    fix: str | None = None,
    abort: Callable[[], str | None] | None = None,
) -> T:
    """Call `probe` until it returns something other than None/False, or the deadline passes.

    `abort` is checked between probes: when it returns a reason (for example "QEMU exited"),
    waiting stops at once with that reason instead of running out the clock. `context` is
    called only on failure, to attach evidence (serial console tail, command line).
    """
    deadline = Deadline(timeout)
    while True:
        result = probe()
        if result is not None and result is not False:
            return result
        reason = abort() if abort else None
        if reason:
            extra = context() if context else ""
            raise WaitTimeout(f"{what} (gave up early: {reason})", deadline.elapsed(),
                              context=extra, fix=fix)
        if deadline.expired():
            raise WaitTimeout(what, timeout, context=context() if context else "", fix=fix)
        time.sleep(min(interval, max(deadline.remaining(), 0.001)))
