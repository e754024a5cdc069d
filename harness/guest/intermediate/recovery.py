"""Resume everything a state dir says is stopped (after a crash, from the watchdog, resume-all)."""

from __future__ import annotations

import logging

from . import events as ev
from .events import EventLog
from .freezer import FreezeResult, freezer_for
from .state import StateError, StateStore

log = logging.getLogger(__name__)


def resume_recorded(store: StateStore, events: EventLog, reason: str) -> FreezeResult:
    """Resume recorded units, last stopped first; pids that are gone or recycled are skipped.

    A recycled pid (alive, but its start time differs from the recorded one) is another process
    now and is never signalled.
    """
    total = FreezeResult()
    try:
        records = store.load()
    except StateError as exc:
        log.error("%s; nothing can be resumed from it", exc)
        return total
    for record in reversed(records):
        unit = record.unit
        try:
            result = freezer_for(unit).thaw(unit)
        except OSError as exc:
            log.error("cannot resume %s: %s", unit.key, exc)
            continue
        for member in result.done:
            events.emit(ev.RESUME, pid=member.pid, comm=member.comm, reason=reason, unit=unit.key, method=unit.method.value)
        for member in result.recycled:
            events.emit(ev.SKIP, pid=member.pid, comm=member.comm, reason="pid-recycled", unit=unit.key)
        for member in result.gone:
            log.debug("pid %d (%s) of %s is gone", member.pid, member.comm, unit.key)
        total.merge(result)
    if records:
        store.save([])
    return total
