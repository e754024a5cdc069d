"""Performing the core's actions on real processes, with the state file in step.

The rules of the record (README.md, "Safety guarantees"): a unit is in the state file before
any of its processes is signalled; it leaves the file only after its resume succeeded, or when
its processes are verifiably gone (or their pids recycled). Every decision leaves one event:
stop or stop-abandoned, resume or resume-failed or gone.
"""

from __future__ import annotations

import logging
import time

from . import events as ev
from .classify import Category
from .config import DaemonConfig, FreezeMethod
from .core import (
    CoreState,
    Decision,
    Drop,
    Emit,
    Held,
    Resume,
    ResumeOutcome,
    Rules,
    Stop,
    StopOutcome,
    settle,
)
from .events import EventLog
from .freezer import DryRunFreezer, Freezer, SignalFreezer, freezer_for
from .observe import Observer, read_cgroup_procs
from .pageout import Pager
from .procs import ProcessTable, read_stat
from .snapshot import JOINS_WORKLOAD, Observation
from .state import StateStore, StoppedRecord
from .units import Member, StopUnit, UnitKind

log = logging.getLogger(__name__)

NEWCOMER_ROUNDS = 5  # a process group that keeps forking: give up on stopping it whole after this


class StartupError(Exception):
    """A clear, one-line reason why the daemon cannot start."""


class Performer:
    def __init__(self, config: DaemonConfig, store: StateStore, events: EventLog, observer: Observer,
                 pager: Pager | None = None) -> None:
        self.config = config
        self.store = store
        self.events = events
        self.observer = observer
        self.pager = pager
        self.rules = Rules.of(config)
        self.saved: list[StoppedRecord] | None = None  # what the state file lists (None: unknown)
        self._state = CoreState()
        self._pending: list[Held] = []  # decided resumes not yet performed: still recorded

    def recorded(self) -> list[StoppedRecord] | None:
        """What the state dir lists as stopped; None if it cannot be read."""
        try:
            return self.store.load()
        except Exception:
            return None

    def _freezer(self, unit: StopUnit) -> Freezer:
        return DryRunFreezer() if self.config.dry_run else freezer_for(unit)

    def _save(self) -> None:
        if self.config.dry_run:
            return
        records = [StoppedRecord(unit=h.unit, since=h.since) for h in (*self._state.held, *self._pending)]
        if records != self.saved:
            self.store.save(records)
            self.saved = records

    def perform(self, decision: Decision, obs: Observation,
                timing: dict[str, float] | None = None) -> CoreState:
        """Carry out the decision's actions in order; returns the state with their outcomes settled."""
        self._state = decision.state
        self._pending = [a.held for a in decision.actions if isinstance(a, Resume)]
        started = time.perf_counter()
        self._save()  # every unit about to be stopped is recorded before any signal
        timing = {**(timing or {}), "record": round((time.perf_counter() - started) * 1000, 3)}
        for action in decision.actions:
            if isinstance(action, Emit):
                self.events.emit(action.event, pid=action.pid, comm=action.comm, reason=action.reason,
                                 pressure=obs.reading, **dict(action.extra))
            elif isinstance(action, Stop):
                self._stop(action, obs, timing)
            elif isinstance(action, Resume):
                self._resume(action, obs)
            elif isinstance(action, Drop):
                self._drop(action.held, obs)
        self._pending = []
        self._save()
        return self._state

    # -- stop ------------------------------------------------------------------------------------
    def _stop(self, action: Stop, obs: Observation, timing: dict[str, float]) -> None:
        unit = action.unit
        if unit.note:
            log.info("%s: cgroup freeze not possible (%s); using signals", unit.key, unit.note)
        started = time.perf_counter()
        result = self._freezer(unit).freeze(unit)
        signal_ms = (time.perf_counter() - started) * 1000
        members = list(result.done)
        abandon: str | None = None
        newcomers: list[Member] = []
        if not self.config.dry_run:
            if unit.method is FreezeMethod.CGROUP:
                if result.newcomers:
                    abandon, newcomers = self._classified(result.newcomers, cgroup=True)
            elif unit.kind in (UnitKind.PROCESS_GROUP, UnitKind.CGROUP) and members:
                abandon, newcomers = self._signal_newcomers(unit, members)
            members += newcomers
        if abandon is None and not members:
            abandon = "failed: " + "; ".join(result.errors) if result.failed else "vanished"
        if abandon is not None:
            members = self._undo(unit, members)
        self._state = settle(self._state, self.rules, StopOutcome(unit.key, tuple(members)))
        self._save()
        if not members:
            log.info("%s not stopped: %s", unit.key, abandon)
            self.events.emit(ev.STOP_ABANDONED, pid=unit.members[0].pid if unit.members else None, comm=unit.comm,
                             reason=abandon, pressure=obs.reading, unit=unit.key, pids=unit.pids,
                             page_out=action.page_out)
            return
        leader = members[0]
        self.events.emit(
            ev.STOP,
            pid=leader.pid,
            comm=leader.comm,
            reason="pressure",
            pressure=obs.reading,
            pids=[m.pid for m in members],
            unit=unit.key,
            kind=unit.kind.value,
            method=unit.method.value,
            rss_kb=unit.rss_kb,
            swap_kb=unit.swap_kb,
            note=unit.note,
            dry_run=self.config.dry_run,
            members=[[m.pid, m.starttime, m.comm] for m in members],
            newcomers=[m.pid for m in newcomers],
            timing_ms={**timing, "signal": round(signal_ms, 3)},
            page_out=action.page_out,
        )
        log.info("stopped %s (%s, rss %d kB)%s", unit.key, leader.comm, unit.rss_kb,
                 " [dry run]" if self.config.dry_run else "")
        if action.page_out and self.pager is not None and not self.config.dry_run:
            # Queued, not done here: the page-out thread works in bounded chunks.
            self.pager.submit(unit.with_members(members), obs.reading)

    def _classified(self, pids: list[int], cgroup: bool = False) -> tuple[str | None, list[Member]]:
        """Classify processes that joined a unit after the scan: (why one is not distinct, or None;
        the live ones as members). A newcomer is stopped only once it is known to be distinct (or,
        in a cgroup unit, to be one that joins its workload)."""
        cls = self.observer.classify()
        members = []
        for pid in pids:
            stat = cls.table.stats.get(pid)
            if stat is None or stat.is_zombie:
                continue  # gone again
            verdict = cls.verdict(pid)
            if verdict is None:
                return "newcomer:out-of-scope", []
            if verdict.category is not Category.DISTINCT and not (cgroup and verdict.reason in JOINS_WORKLOAD):
                return f"newcomer:{verdict.reason}", []
            members.append(Member.from_stat(stat))
        return None, members

    @staticmethod
    def _joined(unit: StopUnit, known: set[int]) -> list[int]:
        """Who is in a signalled group or cgroup unit now that is not `known` (zombies left out)."""
        if unit.kind is UnitKind.CGROUP and unit.cgroup_dir:
            new = [p for p in read_cgroup_procs(unit.cgroup_dir) or () if p not in known]
            stats = [read_stat(p) for p in new]
            return [s.pid for s in stats if s is not None and not s.is_zombie]
        table = ProcessTable.scan()  # only a full table lists a group's members
        return [p for p in table.group_members(int(unit.key.partition(":")[2]))
                if p not in known and not table.stats[p].is_zombie]

    def _signal_newcomers(self, unit: StopUnit, members: list[Member]) -> tuple[str | None, list[Member]]:
        """A member may have forked (or a process joined the cgroup) between the scan and the
        SIGSTOPs: classify the newcomers, and stop and record them too if they are distinct
        (each recorded before its signal)."""
        added: list[Member] = []
        for _ in range(NEWCOMER_ROUNDS):
            pids = self._joined(unit, set(unit.pids) | {m.pid for m in added})
            if not pids:
                return None, added
            why, newcomers = self._classified(pids, cgroup=unit.kind is UnitKind.CGROUP)
            if why is not None:
                return why, added
            self._state = settle(self._state, self.rules,
                                 StopOutcome(unit.key, tuple(members + added + newcomers)))
            self._save()
            added += SignalFreezer().freeze(unit.with_members(newcomers)).done
        return "newcomer:still-forking", added

    def _undo(self, unit: StopUnit, members: list[Member]) -> list[Member]:
        """Resume what an abandoned stop did stop; returns what is still stopped (kept recorded)."""
        if not members and unit.method is not FreezeMethod.CGROUP:
            return []  # nothing was stopped (a cgroup's freeze was written, though: thaw it)
        result = self._freezer(unit).thaw(unit.with_members(members))
        if result.failed:
            log.error("cannot undo the stop of %s: %s", unit.key, "; ".join(result.errors))
        return list(result.failed)

    # -- resume ----------------------------------------------------------------------------------
    def _resume(self, action: Resume, obs: Observation) -> None:
        held = action.held
        unit = held.unit
        if self.pager is not None:
            self.pager.cancel(unit.key, "resumed")  # and nothing is paged back in by force
        try:
            result = self._freezer(unit).thaw(unit)
        finally:
            self._pending = [h for h in self._pending if h is not held]
        self._state = settle(self._state, self.rules, ResumeOutcome(action, tuple(result.failed), obs.now))
        self._save()  # after the signal: a crash in between only repeats it
        common = {"pressure": obs.reading, "unit": unit.key, "method": unit.method.value}
        if result.done:
            leader = result.done[0]
            extra = {"failed": [m.pid for m in result.failed], "error": "; ".join(result.errors)} if result.failed else {}
            self.events.emit(ev.RESUME, pid=leader.pid, comm=leader.comm, reason=action.reason,
                             pids=[m.pid for m in result.done], stopped_for=round(time.time() - held.since, 3),
                             dry_run=self.config.dry_run, **common, **extra, **dict(action.detail))
            log.info("resumed %s (%s): %s", unit.key, leader.comm, action.reason)
        elif result.failed:
            self.events.emit(ev.RESUME_FAILED, pid=result.failed[0].pid, comm=result.failed[0].comm, reason=action.reason,
                             pids=[m.pid for m in result.failed], error="; ".join(result.errors), **common)
            log.error("cannot resume %s (%s): %s; kept recorded, retried", unit.key, action.reason, "; ".join(result.errors))
        else:
            self.events.emit(ev.GONE, pid=unit.members[0].pid if unit.members else None, comm=unit.comm,
                             reason=action.reason, pids=unit.pids, **common)

    def _drop(self, held: Held, obs: Observation) -> None:
        unit = held.unit
        log.debug("stopped unit %s is gone", unit.key)
        if self.pager is not None:
            self.pager.cancel(unit.key, "gone")
        if unit.method is FreezeMethod.CGROUP and unit.cgroup_dir and not self.config.dry_run:
            # Never leave an empty cgroup frozen: whatever is put there later would freeze.
            self._freezer(unit).thaw(unit)
        self._save()
        self.events.emit(ev.GONE, pid=unit.members[0].pid if unit.members else None, comm=unit.comm, reason="gone",
                         pressure=obs.reading, unit=unit.key, method=unit.method.value, pids=unit.pids)

