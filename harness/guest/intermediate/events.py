"""The JSONL event log: one JSON object per decision, appended and flushed immediately."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from .pressure import PressureReading

log = logging.getLogger(__name__)

# Event names (documented in README.md).
START = "start"
EXIT = "exit"
PRESSURE = "pressure"
STOP = "stop"
RESUME = "resume"
SKIP = "skip"
# The inputs of one decision (see snapshot.py); replay.py re-derives the decisions from them.
INPUT = "input"
# Outcomes other than a plain stop or resume, so that every decision leaves one line.
STOP_ABANDONED = "stop-abandoned"  # nothing was stopped after all (vanished; a newcomer not distinct)
RESUME_FAILED = "resume-failed"  # the signal or write failed: the unit stays recorded and is retried
GONE = "gone"  # every process of a held unit is gone: dropped (an emptied cgroup is thawed)
# What a stopped unit's page-out freed and how long it took (written by the page-out thread; an
# outcome, not a decision: the decision is the stop's `page_out`).
PAGE_OUT = "page-out"


class EventLog:
    """Appends with one write(2) per line on an O_APPEND fd, so the daemon and its watchdog can
    share the file without interleaving lines."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._fd: int | None = None
        if path:
            parent = os.path.dirname(path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def emit(
        self,
        event: str,
        *,
        pid: int | None = None,
        comm: str | None = None,
        reason: str | None = None,
        pressure: PressureReading | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "t": extra.pop("t", None) or time.time(),
            "event": event,
            "pid": pid,
            "comm": comm,
            "reason": reason,
            "pressure": pressure.as_event() if pressure is not None else None,
        }
        record.update(extra)
        log.debug("event %s", record)
        self._write(record)
        return record

    def emit_input(self, t: float, fields: dict[str, Any]) -> None:
        """An `input` record: only t, event and the compact inputs (it is the most frequent line)."""
        self._write({"t": round(t, 3), "event": INPUT, **fields})

    def _write(self, record: dict[str, Any]) -> None:
        if self._fd is not None:
            line = json.dumps(record, sort_keys=False, default=str, separators=(",", ":")
                              if record.get("event") == INPUT else None) + "\n"
            try:
                os.write(self._fd, line.encode())
            except OSError as exc:  # a full disk must not take the daemon down
                log.error("cannot write event log %s: %s", self.path, exc)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_events(path: str) -> list[dict[str, Any]]:
    """Parse an event log (for tests, the benchmark and the harness)."""
    events = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if line:
                    events.append(json.loads(line))
    except FileNotFoundError:
        pass
    return events
