"""Resume everything a state dir says is stopped (after a crash, from the watchdog, resume-all)."""

from __future__ import annotations

import logging
from dataclasses import replace

from . import events as ev
from .events import EventLog
from .freezer import FreezeResult, freezer_for
from .state import StateError, StateStore, StoppedRecord

log = logging.getLogger(__name__)


def resume_recorded(store: StateStore, events: EventLog, reason: str) -> tuple[FreezeResult, list[StoppedRecord]]:
    """Resume recorded units, last stopped first; pids that are gone or recycled are dropped
    (a recycled pid -- alive, but with another start time -- is another process now and is never
    signalled). Returns what happened and the records that are still stopped: a member whose
    resume failed stays in the state file, with only the members that failed.
    """
    total = FreezeResult()
    try:
        records = store.load()
    except StateError as exc:
        log.error("%s; nothing can be resumed from it", exc)
        return total, []
    remaining: list[StoppedRecord] = []
    for record in reversed(records):
        unit = record.unit
        try:
            result = freezer_for(unit).thaw(unit)
        except OSError as exc:
            result = FreezeResult()
            for member in unit.members:
                result.fail(member, exc)
        for member in result.done:
            events.emit(ev.RESUME, pid=member.pid, comm=member.comm, reason=reason, unit=unit.key, method=unit.method.value)
        for member in result.recycled:
            events.emit(ev.SKIP, pid=member.pid, comm=member.comm, reason="pid-recycled", unit=unit.key)
        for member in result.gone:
            log.debug("pid %d (%s) of %s is gone", member.pid, member.comm, unit.key)
        if result.failed:
            log.error("cannot resume %s: %s; it stays in the state file", unit.key, "; ".join(result.errors))
            events.emit(ev.RESUME_FAILED, pid=result.failed[0].pid, comm=result.failed[0].comm, reason=reason,
                        unit=unit.key, pids=[m.pid for m in result.failed], error="; ".join(result.errors))
            remaining.insert(0, replace(record, unit=unit.with_members(result.failed)))
        total.merge(result)
    if records:
        store.save(remaining)
    return total, remaining
