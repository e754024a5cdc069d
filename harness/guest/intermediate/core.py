"""The daemon's decisions, as a pure function: no clock, no /proc, no signal, no file.

    decide(state, rules, observation) -> Decision(next state, actions) | Need(what to read)

The daemon (daemon.py) reads the pressure, calls `decide`; when the core answers `Need`, it
reads what was asked (a scan of the classified processes, the memory figures of the headroom
gate) and calls again with them. It then performs the actions in order -- stop a unit, resume
a unit (with its reason), drop a unit whose processes are gone, emit an event -- and reports
each stop's and resume's outcome with `settle`. The next state assumes every action succeeds;
`settle` corrects it (a unit that vanished before its stop, a resume that failed).
`release_all` is the decision to resume everything (the daemon is exiting).

Every rule is documented in README.md, "Decision rules". `replay.py` runs this same core on the
inputs an event log recorded.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .config import DaemonConfig, FreezeMethod, Thresholds
from .plan import plan_units
from .reading import PressureLevel, PressureReading, pressure_level
from .snapshot import Memory, Observation, Scan
from .units import Member, StopUnit, UnitKind

PRESSURE_EVENT_PERIOD = 1.0  # at most one periodic `pressure` event per second while high
NEVER = -math.inf


class DaemonState(enum.Enum):
    CALM = "calm"  # nothing stopped by us, pressure not high
    HIGH = "high"  # pressure high: stopping distinct units one at a time
    HOLDING = "holding"  # units stopped, pressure not high: waiting for --hold of calm to resume


LATER_RULES = frozenset({"min_rss_kb", "page_out", "blocked_report_interval"})


@dataclass(frozen=True)
class Rules:
    """The parameters of the decisions (a subset of DaemonConfig; recorded in the `start` event)."""

    thresholds: Thresholds = field(default_factory=Thresholds)
    stop_interval: float = 1.0
    resume_headroom: float = 1.0
    resume_reserve_kb: int = 64 * 1024
    resume_grace: float = 5.0
    max_stopped: float | None = None
    rescan_interval: float = 2.0
    method: FreezeMethod = FreezeMethod.SIGNAL
    # The defaults below are the rules of logs written before these rules existed (replay).
    min_rss_kb: int = 0  # 0: any unit may be stopped
    page_out: bool = False  # page out each unit once it is stopped
    # Repeat a waiting resume's `resume-blocked` event this often (None: once per holding spell,
    # headroom only).
    blocked_report_interval: float | None = None

    @classmethod
    def of(cls, config: DaemonConfig) -> Rules:
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        # Rules added since the first record are written only when on: a record of the old rules
        # reads the same as before they existed (and from_dict gives a missing one its default).
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)
                                if f.name not in LATER_RULES or getattr(self, f.name) != f.default}
        th = self.thresholds
        data["thresholds"] = {"stop_above": th.stop_above, "resume_below": th.resume_below, "hold": th.hold}
        data["method"] = self.method.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rules:
        values = {k: v for k, v in data.items() if k in {f.name for f in fields(cls)}}
        values["thresholds"] = Thresholds(**values.get("thresholds", {}))
        values["method"] = FreezeMethod(values.get("method", FreezeMethod.SIGNAL.value))
        return cls(**values)


@dataclass(frozen=True)
class Held:
    """A unit the daemon holds stopped."""

    unit: StopUnit
    since: float  # wall clock of the stop (the state file, `status`)
    stopped_at: float  # monotonic time of the stop (--max-stopped)
    retry_at: float = NEVER  # after a failed resume: not tried again before this time


@dataclass(frozen=True)
class CoreState:
    phase: DaemonState = DaemonState.CALM
    level: PressureLevel = PressureLevel.CALM
    held: tuple[Held, ...] = ()  # a stack: the last stopped is resumed first
    cooldown: tuple[tuple[int, int, float], ...] = ()  # (pid, starttime, not stopped again before)
    calm_since: float | None = None
    next_stop_at: float = 0.0
    next_resume_at: float = 0.0
    last_resume_at: float = NEVER
    last_scan_at: float = NEVER
    last_pressure_event: float = NEVER
    reported_skips: frozenset[tuple[int | None, str]] = frozenset()  # this episode's skip events
    # Resumes waiting while holding: (why, unit key, waiting since, last reported) -- why is
    # "headroom" (that unit's swapped-out pages do not fit) or "pressure" (not calm yet).
    blocked: tuple[tuple[str, str, float, float], ...] = ()

    @property
    def held_pids(self) -> set[int]:
        return {m.pid for h in self.held for m in h.unit.members}

    @property
    def stopped_count(self) -> int:
        return sum(len(h.unit.members) for h in self.held)


# == actions =====================================================================================


@dataclass(frozen=True)
class Stop:
    unit: StopUnit
    page_out: bool = False  # once stopped, reclaim its memory (the shell does it off the loop)


@dataclass(frozen=True)
class Resume:
    held: Held
    index: int  # its place in the stack: a failed resume puts it back there
    reason: str  # calm, max-stopped, reclassified:<reason>, no-reading, exit
    # Why now, for the event: how long it was calm, the headroom figures, how long it waited.
    detail: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Drop:
    """Every process of a held unit is gone: forget it (an emptied cgroup is thawed)."""

    held: Held


@dataclass(frozen=True)
class Emit:
    """An event that only reports (`pressure`, `skip`)."""

    event: str
    reason: str
    pid: int | None = None
    comm: str | None = None
    extra: tuple[tuple[str, Any], ...] = ()


Action = Stop | Resume | Drop | Emit


@dataclass(frozen=True)
class Decision:
    state: CoreState
    actions: tuple[Action, ...]


@dataclass(frozen=True)
class Need:
    """Call again with this read too: a scan, or the memory figures of these units."""

    scan: bool = False
    memory_for: tuple[StopUnit, ...] = ()


@dataclass(frozen=True)
class StopOutcome:
    key: str
    members: tuple[Member, ...]  # what is stopped now (newcomers included); empty: nothing is


@dataclass(frozen=True)
class ResumeOutcome:
    action: Resume
    failed: tuple[Member, ...]  # members that could not be resumed: the unit stays held with them
    now: float


# == the decision ================================================================================


class _Missing(Exception):
    def __init__(self, need: Need) -> None:
        self.need = need


class _Tick:
    """One decision, worked out on mutable copies of the state's fields (never the caller's)."""

    def __init__(self, state: CoreState, rules: Rules, obs: Observation) -> None:
        self.before = state
        self.rules = rules
        self.th = rules.thresholds
        self.obs = obs
        self.now = obs.now
        self.phase = state.phase
        self.level = state.level
        self.held = list(state.held)
        self.cooldown = {(pid, start): until for pid, start, until in state.cooldown}
        self.calm_since = state.calm_since
        self.next_stop_at = state.next_stop_at
        self.next_resume_at = state.next_resume_at
        self.last_resume_at = state.last_resume_at
        self.last_scan_at = state.last_scan_at
        self.last_pressure_event = state.last_pressure_event
        self.reported_skips = set(state.reported_skips)
        self.blocked = {(why, key): (since, reported) for why, key, since, reported in state.blocked}
        self.actions: list[Action] = []

    def result(self) -> Decision:
        state = CoreState(
            phase=self.phase,
            level=self.level,
            held=tuple(self.held),
            cooldown=tuple(sorted((pid, start, until) for (pid, start), until in self.cooldown.items())),
            calm_since=self.calm_since,
            next_stop_at=self.next_stop_at,
            next_resume_at=self.next_resume_at,
            last_resume_at=self.last_resume_at,
            last_scan_at=self.last_scan_at,
            last_pressure_event=self.last_pressure_event,
            reported_skips=frozenset(self.reported_skips),
            blocked=tuple(sorted((why, key, since, reported) for (why, key), (since, reported) in self.blocked.items())),
        )
        return Decision(state, tuple(self.actions))

    # -- the rules, in the order the daemon has always applied them ------------------------------
    def tick(self) -> None:
        now, reading = self.now, self.obs.reading
        self.level = self._level(reading)
        if self.level is PressureLevel.CALM:
            self.calm_since = now if self.calm_since is None else self.calm_since
        else:
            self.calm_since = None
        if self.level is PressureLevel.UNKNOWN:
            # No valid reading: fail safe. Resume everything, stop nothing, until a valid one.
            self.resume_all("no-reading", respect_retry=True)
            reported = self.update_phase()
            if not reported and self.before.level is not PressureLevel.UNKNOWN:
                self.emit_pressure(previous=None)
            return
        self.expire_max_stopped()
        if self.held and now - self.last_scan_at >= self.rules.rescan_interval:
            self.refresh(self.scan())  # drops gone processes, resumes reclassified ones
        self.update_phase()
        if self.phase is DaemonState.HIGH and now >= self.next_stop_at:
            self.stop_next()
            self.next_stop_at = now + self.rules.stop_interval
        elif (
            self.phase is DaemonState.HOLDING
            and self.calm_since is not None
            and now - self.calm_since >= self.th.hold
            and now >= self.next_resume_at
        ):
            self.resume_next()
            self.update_phase()
        if self.phase is DaemonState.HOLDING:
            self.report_pressure_wait()

    def _level(self, reading: PressureReading | None) -> PressureLevel:
        level = pressure_level(reading, self.th)
        if (
            level is PressureLevel.HIGH
            and reading is not None
            and self.now - self.last_resume_at < self.rules.resume_grace
            and reading.some_avg10 < self.th.stop_above
        ):
            # A resumed process pages its swapped-out memory back in, which stalls for a
            # moment by design: within the grace only sustained pressure (avg10) stops again.
            return PressureLevel.BETWEEN
        return level

    def update_phase(self) -> bool:
        """Follow the level; True if a `pressure` event was emitted."""
        if self.level is PressureLevel.HIGH:
            new = DaemonState.HIGH
        elif self.held:
            new = DaemonState.HOLDING
        else:
            new = DaemonState.CALM
        if new is not self.phase:
            previous, self.phase = self.phase, new
            if new is DaemonState.HIGH and previous is DaemonState.CALM:
                # Report what is spared once per episode (an episode ends when all is resumed).
                self.reported_skips.clear()
            if previous is DaemonState.HOLDING:
                self.blocked.clear()
            self.emit_pressure(previous)
            return True
        if new is DaemonState.HIGH and self.now - self.last_pressure_event >= PRESSURE_EVENT_PERIOD:
            self.emit_pressure(previous=None)
            return True
        return False

    def emit_pressure(self, previous: DaemonState | None) -> None:
        self.last_pressure_event = self.now
        stopped = sum(len(h.unit.members) for h in self.held)
        self.actions.append(Emit("pressure", self.level.value, extra=(
            ("state", self.phase.value), ("previous", previous.value if previous else None), ("stopped", stopped))))

    # -- inputs the core has to ask for ----------------------------------------------------------
    def scan(self) -> Scan:
        if self.obs.scan is None:
            raise _Missing(Need(scan=True))
        self.last_scan_at = self.now
        return self.obs.scan

    def memory(self) -> Memory:
        if self.obs.memory is None:
            raise _Missing(Need(memory_for=tuple(h.unit for h in self.held)))
        return self.obs.memory

    # -- held units ------------------------------------------------------------------------------
    def refresh(self, scan: Scan) -> None:
        """Drop processes that are gone; resume units a member of which is no longer distinct."""
        for record in list(self.held):
            unit = record.unit
            live = [m for m in unit.members if scan.alive(m)]
            if unit.method is FreezeMethod.CGROUP and unit.cgroup_dir:
                # Processes forked inside a frozen cgroup are frozen too: track them as members.
                known = {m.pid for m in live}
                facts = scan.cgroup(unit.key.partition(":")[2])
                for pid in facts.procs if facts else ():
                    proc = scan.proc(pid)
                    if pid not in known and proc is not None:
                        live.append(proc.member())
            if not live:
                self.held.remove(record)
                self.actions.append(Drop(record))
                continue
            if [m.pid for m in live] != unit.pids:
                index = self.held.index(record)
                record = replace(record, unit=unit.with_members(live))
                self.held[index] = record
            for member in live:
                proc = scan.proc(member.pid)
                if proc is not None and proc.in_scope and not proc.is_distinct and not (
                        unit.kind is UnitKind.CGROUP and proc.joins_workload):
                    self.resume(self.held.index(record), f"reclassified:{proc.reason}")
                    break

    def resume(self, index: int, reason: str, detail: tuple[tuple[str, Any], ...] = ()) -> None:
        record = self.held.pop(index)
        self.last_resume_at = self.now
        self.blocked.pop(("headroom", record.unit.key), None)
        self.actions.append(Resume(record, index, reason, detail))

    def resume_all(self, reason: str, respect_retry: bool) -> None:
        for index in range(len(self.held) - 1, -1, -1):
            if respect_retry and self.now < self.held[index].retry_at:
                continue
            self.resume(index, reason)

    def expire_max_stopped(self) -> None:
        limit = self.rules.max_stopped
        if limit is None:
            return
        for record in list(self.held):
            if self.now - record.stopped_at >= limit and self.now >= record.retry_at:
                for member in record.unit.members:
                    self.cooldown[(member.pid, member.starttime)] = self.now + self.th.hold
                self.resume(self.held.index(record), "max-stopped")
        self.cooldown = {key: until for key, until in self.cooldown.items() if until > self.now}

    # -- stopping --------------------------------------------------------------------------------
    def stop_next(self) -> None:
        scan = self.scan()
        self.refresh(scan)
        held_pids = {m.pid for h in self.held for m in h.unit.members}
        # Our own units resumed in this very decision still show state T in the scan.
        ours = {m.pid for h in self.before.held for m in h.unit.members}
        extra: dict[int, str] = {}
        for proc in scan.distinct():
            if proc.pid in held_pids:
                continue
            if proc.is_stopped and proc.pid not in ours:
                extra[proc.pid] = "already-stopped"  # stopped by someone else: not ours to resume
            elif self.cooldown.get((proc.pid, proc.starttime), NEVER) > self.now:
                extra[proc.pid] = "cooldown:max-stopped"
        units = plan_units(scan, self.rules.method, excluded=held_pids | set(extra))
        in_units = {m.pid for u in units for m in u.members}
        for proc in scan.procs:
            if proc.in_scope and not proc.is_distinct and proc.pid not in in_units | held_pids:
                self.skip_once(proc.pid, proc.comm, proc.reason)
        for pid, reason in sorted(extra.items()):
            self.skip_once(pid, scan.by_pid[pid].comm, reason)
        if not units:
            self.skip_once(None, None, "nothing-to-stop")
            return
        unit = units[0]
        floor = self.rules.min_rss_kb
        if unit.rss_kb < floor and any(h.unit.rss_kb >= floor for h in self.held):
            # A big unit is already stopped (its memory is on its way out); stopping a small
            # one as well relieves next to nothing. (If every unit is small, the largest goes.)
            self.skip_once(unit.members[0].pid, unit.comm, "too-small", unit=unit.key, rss_kb=unit.rss_kb,
                           min_rss_kb=floor)
            return
        self.held.append(Held(unit=unit, since=self.obs.wall, stopped_at=self.now))
        self.actions.append(Stop(unit, page_out=self.rules.page_out))

    def skip_once(self, pid: int | None, comm: str | None, reason: str, **extra: Any) -> None:
        if (pid, reason) in self.reported_skips:
            return
        self.reported_skips.add((pid, reason))
        self.actions.append(Emit("skip", reason, pid, comm, tuple(extra.items())))

    # -- resuming --------------------------------------------------------------------------------
    def report_blocked(self, why: str, record: Held, **extra: Any) -> None:
        """A resume that waits: `skip` resume-blocked:<why>, at its first refusal and then every
        blocked_report_interval while it lasts (without an interval: once per holding spell)."""
        interval = self.rules.blocked_report_interval
        since, reported = self.blocked.get((why, record.unit.key), (self.now, None))
        due = reported is None or (interval is not None and self.now - reported >= interval)
        self.blocked[(why, record.unit.key)] = (since, self.now if due else reported)
        if due:
            unit = record.unit
            if self.now > since:  # a repeat: for how long it has been waiting
                extra["waiting_s"] = round(self.now - since, 3)
            self.actions.append(Emit("skip", f"resume-blocked:{why}", unit.members[0].pid if unit.members else None,
                                     unit.comm, (("unit", unit.key), *extra.items())))

    def report_pressure_wait(self) -> None:
        """Holding, but not calm (the fast signal or the lagging avg10 is not below resume-below
        yet): say so, rate-limited, for the unit that would be resumed next."""
        if self.rules.blocked_report_interval is None or self.level is PressureLevel.CALM or not self.held:
            self.blocked = {k: v for k, v in self.blocked.items() if k[0] != "pressure"}
            return
        reading = self.obs.reading
        assert reading is not None
        top = self.held[-1]
        self.blocked = {k: v for k, v in self.blocked.items() if k[0] != "pressure" or k[1] == top.unit.key}
        self.report_blocked("pressure", top, some_avg10=reading.some_avg10, some_fast=reading.some_fast,
                            resume_below=self.th.resume_below)

    def resume_next(self) -> None:
        factor = self.rules.resume_headroom
        memory = self.memory() if factor > 0 else None
        calm_for = round(self.now - self.calm_since, 3) if self.calm_since is not None else None
        for index in range(len(self.held) - 1, -1, -1):
            record = self.held[index]
            unit = record.unit
            if self.now < record.retry_at:
                continue
            detail: list[tuple[str, Any]] = [("calm_for_s", calm_for), ("held_for_s", round(self.now - record.stopped_at, 3))]
            if memory is not None:
                # Linked to the balloon: while it is still inflated there is no room for the
                # unit's swapped-out pages, and resuming would only bring the pressure back.
                need = memory.swap_of(unit) * factor + self.rules.resume_reserve_kb
                if memory.available_kb < need:
                    self.report_blocked("headroom", record, need_kb=int(need), available_kb=memory.available_kb)
                    continue
                detail += [("need_kb", int(need)), ("available_kb", memory.available_kb)]
                waited = self.blocked.get(("headroom", unit.key))
                if waited is not None:
                    detail.append(("blocked_for_s", round(self.now - waited[0], 3)))
            self.resume(index, "calm", tuple(detail))
            break
        # Between two resumes -- or two headroom checks -- wait for a fresh pressure window.
        self.next_resume_at = self.now + self.rules.stop_interval


def decide(state: CoreState, rules: Rules, obs: Observation) -> Decision | Need:
    tick = _Tick(state, rules, obs)
    try:
        tick.tick()
    except _Missing as missing:
        return missing.need
    return tick.result()


def release_all(state: CoreState, rules: Rules, obs: Observation, reason: str) -> Decision:
    """Resume everything held, last stopped first (the daemon is exiting)."""
    tick = _Tick(state, rules, obs)
    tick.resume_all(reason, respect_retry=False)
    return tick.result()


def settle(state: CoreState, rules: Rules, outcome: StopOutcome | ResumeOutcome) -> CoreState:
    """Correct the optimistic next state with what an action really did."""
    held = list(state.held)
    if isinstance(outcome, StopOutcome):
        index = max((i for i, h in enumerate(held) if h.unit.key == outcome.key), default=None)
        if index is None:
            return state
        if outcome.members:
            held[index] = replace(held[index], unit=held[index].unit.with_members(outcome.members))
        else:
            del held[index]  # nothing could be stopped: not ours to hold
        return replace(state, held=tuple(held))
    if not outcome.failed:
        return state
    # A record leaves the stack only once its resume succeeded: put back what failed, to be
    # tried again no sooner than a stop interval from now.
    back = replace(outcome.action.held, unit=outcome.action.held.unit.with_members(outcome.failed),
                   retry_at=outcome.now + rules.stop_interval)
    held.insert(min(outcome.action.index, len(held)), back)
    return replace(state, held=tuple(held))
