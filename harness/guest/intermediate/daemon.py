"""The daemon loop: read pressure, decide, stop or resume one unit at a time."""

from __future__ import annotations

import ctypes
import enum
import logging
import os
import select
import signal
import subprocess
import time
from dataclasses import replace
from typing import Any

from . import events as ev
from .classify import Category, Classification, Classifier
from .config import DaemonConfig
from .control import ControlServer
from .events import EventLog
from .freezer import DryRunFreezer, Freezer, FreezeResult, SignalFreezer, freezer_for
from .pressure import (
    IDLE_READING,
    FilePressureSource,
    PressureLevel,
    PressureReading,
    PressureSource,
    PsiTriggerSource,
    pressure_level,
)
from .procs import ProcessTable, is_same_process, read_mem_available_kb, read_memory
from .recovery import resume_recorded
from .state import StateStore, StoppedRecord
from .units import Member, StopUnit, UnitKind, plan_units, read_cgroup_procs
from .watchdog import spawn_watchdog

log = logging.getLogger(__name__)

PRESSURE_EVENT_PERIOD = 1.0  # at most one periodic `pressure` event per second while high
STATUS_MAX_AGE = 1.0  # a status request rescans /proc if the last scan is older than this
STOPPED_STATES = ("T", "t")


class DaemonState(enum.Enum):
    CALM = "calm"  # nothing stopped by us, pressure not high
    HIGH = "high"  # pressure high: stopping distinct units one at a time
    HOLDING = "holding"  # units stopped, pressure not high: waiting for --hold of calm to resume


class StartupError(Exception):
    """A clear, one-line reason why the daemon cannot start."""


def open_source(config: DaemonConfig) -> PressureSource:
    if config.pressure_file:
        try:
            return FilePressureSource(config.pressure_file, config.window, config.file_poll_interval)
        except OSError as exc:
            raise StartupError(f"cannot read --pressure-file {config.pressure_file}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise StartupError(f"--pressure-file {config.pressure_file} is not in PSI format: {exc}") from None
    try:
        return PsiTriggerSource(config.psi_path, config.thresholds.stop_above, config.window)
    except OSError as exc:
        raise StartupError(
            f"cannot register a PSI trigger on {config.psi_path}: {exc.strerror or exc} "
            "(is PSI enabled? try psi=1 on the kernel command line, or use --pressure-file)"
        ) from None


def lock_memory() -> None:
    """mlockall so that the daemon itself does not stall on page faults under memory pressure."""
    libc = ctypes.CDLL(None, use_errno=True)
    mcl_current, mcl_future = 1, 2
    if libc.mlockall(mcl_current | mcl_future) != 0:
        log.warning("mlockall failed: %s", os.strerror(ctypes.get_errno()))


class Daemon:
    def __init__(self, config: DaemonConfig, log_level: str = "INFO") -> None:
        self.config = config
        self.log_level = log_level
        self.thresholds = config.thresholds
        try:
            self.events = EventLog(config.events_path)
        except OSError as exc:
            raise StartupError(f"cannot open --events {config.events_path}: {exc.strerror or exc}") from None
        self.store = StateStore(config.state_dir)
        self.classifier = Classifier(config.selection, self_pids={os.getpid()})
        self.state = DaemonState.CALM
        self.level = PressureLevel.CALM
        self.reading: PressureReading = IDLE_READING
        self.stopped: list[StoppedRecord] = []  # a stack: the last stopped is resumed first
        self.stopped_at: dict[str, float] = {}  # unit key -> time.monotonic() of the stop
        self.cooldown: dict[tuple[int, int], float] = {}  # (pid, starttime) -> not before
        self.classification: Classification | None = None
        self.last_scan_at = float("-inf")
        self.calm_since: float | None = None
        self.next_stop_at = 0.0
        self.next_resume_at = 0.0
        self.last_resume_at = float("-inf")
        self.last_pressure_event = float("-inf")
        self.reported_skips: set[tuple[int | None, str]] = set()
        self.reported_blocked: set[str] = set()
        self.exit_reason: str | None = None
        self.source: PressureSource | None = None
        self.control: ControlServer | None = None
        self.watchdog: subprocess.Popen | None = None
        self._watchdog_pidfd: int | None = None
        self._wakeup_r = self._wakeup_w = -1
        self._poller = select.poll()

    # == lifecycle =================================================================================
    def setup(self) -> None:
        cfg = self.config
        if cfg.mlock:
            lock_memory()
        # Open the pressure source first: it is the likeliest thing to be misconfigured.
        self.source = open_source(cfg)
        recovered = FreezeResult()
        if cfg.dry_run:
            # Never signals, so it needs neither the lock, nor recovery, nor a watchdog.
            leftovers = len(self._recorded() or [])
            if leftovers:
                log.warning("dry run: state dir %s lists %d stopped unit(s); left alone", cfg.state_dir, leftovers)
        else:
            try:
                self.store.lock()
            except OSError as exc:
                raise StartupError(f"cannot use --state-dir {cfg.state_dir}: {exc.strerror or exc}") from None
            # A crashed predecessor may have left processes stopped: resume them first.
            recovered = resume_recorded(self.store, self.events, "recovered")
            self.store.save([])
        if cfg.control_path:
            try:
                self.control = ControlServer(cfg.control_path, self.handle_request)
            except OSError as exc:
                raise StartupError(f"cannot listen on --control {cfg.control_path}: {exc.strerror or exc}") from None
        self._install_signals()
        if not cfg.dry_run:
            self._start_watchdog()
        self._register_fds()
        self.events.emit(
            ev.START,
            pid=os.getpid(),
            comm="intermediate",
            reason="start",
            pressure=None,
            watchdog_pid=self.watchdog.pid if self.watchdog else None,
            recovered=[m.pid for m in recovered.done],
            config=self.describe_config(),
        )
        log.info(
            "started: source=%s method=%s stop-above=%s resume-below=%s hold=%s scope=%s dry-run=%s",
            self.source.describe(),
            cfg.method.value,
            self.thresholds.stop_above,
            self.thresholds.resume_below,
            self.thresholds.hold,
            self.describe_config()["scope"],
            cfg.dry_run,
        )

    def run(self) -> int:
        try:
            self.setup()
        except BaseException:
            self.teardown(emit_exit=False)
            raise
        try:
            self.loop()
        except BaseException:
            log.exception("daemon loop failed; resuming everything")
            self.exit_reason = self.exit_reason or "error"
            raise
        finally:
            self.teardown()
        return 0

    def teardown(self, emit_exit: bool = True) -> None:
        try:
            self.resume_all("exit")
        finally:
            if emit_exit:
                self.events.emit(ev.EXIT, pid=os.getpid(), comm="intermediate", reason=self.exit_reason or "exit", pressure=self.reading)
            if self.control:
                self.control.close()
            if self.source:
                self.source.close()
            self._stop_watchdog()
            self.store.unlock()
            self.events.close()
            if self._wakeup_r >= 0:
                signal.set_wakeup_fd(-1)
                os.close(self._wakeup_r)
                os.close(self._wakeup_w)
                self._wakeup_r = self._wakeup_w = -1

    def _recorded(self) -> list[StoppedRecord] | None:
        """What the state dir lists as stopped; None if it cannot be read."""
        try:
            return self.store.load()
        except Exception:
            return None

    # == signals, watchdog, poll registration ========================================================
    def _install_signals(self) -> None:
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wakeup_w)

        def request_exit(signum: int, _frame: object) -> None:
            self.exit_reason = f"signal:{signal.Signals(signum).name}"

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, request_exit)

    def _start_watchdog(self) -> None:
        self.watchdog = spawn_watchdog(self.config.state_dir, self.config.events_path, self.log_level)
        try:
            self._watchdog_pidfd = os.pidfd_open(self.watchdog.pid)
        except OSError:
            self._watchdog_pidfd = None
        self.classifier.self_pids = {os.getpid(), self.watchdog.pid}
        log.debug("watchdog pid %d", self.watchdog.pid)

    def _stop_watchdog(self) -> None:
        if self.watchdog is not None:
            if self._recorded() == []:
                # Everything was resumed and recorded as such: the watchdog has nothing to do.
                if self.watchdog.poll() is None:
                    self.watchdog.kill()
                self.watchdog.wait()
            else:
                # Something could not be resumed: leave the watchdog to retry once we are gone.
                log.error("state dir still lists stopped units; leaving them to the watchdog")
            self.watchdog = None
        if self._watchdog_pidfd is not None:
            os.close(self._watchdog_pidfd)
            self._watchdog_pidfd = None

    def _register_fds(self) -> None:
        self._poller = select.poll()
        self._poller.register(self._wakeup_r, select.POLLIN)
        if self.control:
            self._poller.register(self.control.fileno(), select.POLLIN)
        assert self.source is not None
        fd = self.source.fileno()
        if fd is not None:
            self._poller.register(fd, select.POLLPRI)
        if self._watchdog_pidfd is not None:
            self._poller.register(self._watchdog_pidfd, select.POLLIN)

    def _on_watchdog_death(self) -> None:
        code = self.watchdog.wait() if self.watchdog else None
        log.error("watchdog exited (status %s); starting a new one", code)
        if self._watchdog_pidfd is not None:
            self._poller.unregister(self._watchdog_pidfd)
            os.close(self._watchdog_pidfd)
            self._watchdog_pidfd = None
        self.watchdog = None
        self._start_watchdog()
        if self._watchdog_pidfd is not None:
            self._poller.register(self._watchdog_pidfd, select.POLLIN)

    # == the loop ==================================================================================
    def loop(self) -> None:
        assert self.source is not None
        source_fd = self.source.fileno()
        while self.exit_reason is None:
            idle = self.state is DaemonState.CALM and not self.stopped
            interval = self.source.idle_interval if idle else self.source.busy_interval
            for fd, revents in self._poller.poll(interval * 1000):
                if fd == self._wakeup_r:
                    try:
                        os.read(self._wakeup_r, 512)
                    except BlockingIOError:
                        pass
                elif self.control and fd == self.control.fileno():
                    self.control.handle_ready()
                elif fd == source_fd:
                    self.source.on_ready(revents)
                    if self.source.fileno() is None:
                        self._poller.unregister(fd)
                        source_fd = None
                elif fd == self._watchdog_pidfd:
                    self._on_watchdog_death()
            if self.exit_reason is not None:
                break
            self.tick(time.monotonic())

    def tick(self, now: float) -> None:
        assert self.source is not None
        self.reading = self.source.read()
        self.level = pressure_level(self.reading, self.thresholds)
        if (self.level is PressureLevel.HIGH and now - self.last_resume_at < self.config.resume_grace
                and self.reading.some_avg10 < self.thresholds.stop_above):
            # A resumed process pages its swapped-out memory back in, which stalls for a
            # moment by design: within the grace only sustained pressure (avg10) stops again.
            self.level = PressureLevel.BETWEEN
        if self.level is PressureLevel.CALM:
            self.calm_since = now if self.calm_since is None else self.calm_since
        else:
            self.calm_since = None
        self._expire_max_stopped(now)
        if self.stopped and now - self.last_scan_at >= self.config.rescan_interval:
            self.scan(now)  # drops gone processes, resumes reclassified ones
        self._update_state(now)
        if self.state is DaemonState.HIGH and now >= self.next_stop_at:
            self.stop_next(now)
            self.next_stop_at = now + self.config.stop_interval
        elif (
            self.state is DaemonState.HOLDING
            and self.calm_since is not None
            and now - self.calm_since >= self.thresholds.hold
            and now >= self.next_resume_at
        ):
            self.resume_next(now)
            self._update_state(now)

    def _update_state(self, now: float) -> None:
        if self.level is PressureLevel.HIGH:
            new = DaemonState.HIGH
        elif self.stopped:
            new = DaemonState.HOLDING
        else:
            new = DaemonState.CALM
        if new is not self.state:
            previous, self.state = self.state, new
            if new is DaemonState.HIGH and previous is DaemonState.CALM:
                # Report what is spared once per episode (an episode ends when all is resumed).
                self.reported_skips.clear()
            if previous is DaemonState.HOLDING:
                self.reported_blocked.clear()
            self._emit_pressure(now, previous)
        elif new is DaemonState.HIGH and now - self.last_pressure_event >= PRESSURE_EVENT_PERIOD:
            self._emit_pressure(now, previous=None)

    def _emit_pressure(self, now: float, previous: DaemonState | None) -> None:
        self.last_pressure_event = now
        self.events.emit(
            ev.PRESSURE,
            reason=self.level.value,
            pressure=self.reading,
            state=self.state.value,
            previous=previous.value if previous else None,
            stopped=sum(len(r.unit.members) for r in self.stopped),
        )
        if previous is not None:
            log.info("pressure %s -> state %s (%s)", self.level.value, self.state.value, self.reading.as_event())

    # == classification ============================================================================
    def scan(self, now: float) -> Classification:
        cls = self.classifier.classify()
        self.classification = cls
        self.last_scan_at = now
        self._refresh_stopped(cls)
        return cls

    def _refresh_stopped(self, cls: Classification) -> None:
        """Drop processes that are gone; resume units a member of which is no longer distinct."""
        changed = False
        for record in list(self.stopped):
            unit = record.unit
            live = [m for m in unit.members if self._alive_in(cls, m)]
            if unit.kind is UnitKind.CGROUP and unit.cgroup_dir:
                # Processes forked inside a frozen cgroup are frozen too: track them as members.
                known = {m.pid for m in live}
                for pid in read_cgroup_procs(unit.cgroup_dir) or []:
                    stat = cls.table.stats.get(pid)
                    if pid not in known and stat is not None and not stat.is_zombie:
                        live.append(Member.from_stat(stat))
            if not live:
                log.debug("stopped unit %s is gone", unit.key)  # dropped quietly
                if unit.kind is UnitKind.CGROUP:
                    # Never leave an empty cgroup frozen: whatever is put there later would freeze.
                    self._freezer(unit).thaw(unit)
                self.stopped.remove(record)
                self.stopped_at.pop(unit.key, None)
                changed = True
                continue
            if [m.pid for m in live] != unit.pids:
                index = self.stopped.index(record)
                record = replace(record, unit=unit.with_members(live))
                self.stopped[index] = record
                changed = True
            for member in live:
                verdict = cls.verdict(member.pid)
                if verdict is not None and verdict.category is not Category.DISTINCT:
                    self._resume_record(self.stopped.index(record), f"reclassified:{verdict.reason}")
                    break
        if changed:
            self._save()

    @staticmethod
    def _alive_in(cls: Classification, member: Member) -> bool:
        stat = cls.table.stats.get(member.pid)
        return stat is not None and stat.starttime == member.starttime and not stat.is_zombie

    def _report_skips(self, cls: Classification, extra: dict[int, str]) -> None:
        for pid, verdict in sorted(cls.verdicts.items()):
            if pid not in cls.infos or verdict.category is Category.DISTINCT:
                continue  # kernel threads and PID 1 are not worth an event each
            self._skip_once(pid, cls.infos[pid].comm, verdict.reason)
        for pid, reason in sorted(extra.items()):
            self._skip_once(pid, cls.infos[pid].comm if pid in cls.infos else None, reason)

    def _skip_once(self, pid: int | None, comm: str | None, reason: str, **extra: Any) -> None:
        if (pid, reason) in self.reported_skips:
            return
        self.reported_skips.add((pid, reason))
        self.events.emit(ev.SKIP, pid=pid, comm=comm, reason=reason, pressure=self.reading, **extra)

    # == stopping ==================================================================================
    def stop_next(self, now: float) -> None:
        cls = self.scan(now)
        stopped_pids = {m.pid for r in self.stopped for m in r.unit.members}
        extra: dict[int, str] = {}
        for pid in cls.pids(Category.DISTINCT):
            stat = cls.table.stats[pid]
            if pid in stopped_pids:
                continue
            if stat.state in STOPPED_STATES:
                extra[pid] = "already-stopped"  # stopped by someone else: not ours to resume
            elif self.cooldown.get((pid, stat.starttime), 0.0) > now:
                extra[pid] = "cooldown:max-stopped"
        self._report_skips(cls, extra)
        units = plan_units(cls, self.config.method, excluded=stopped_pids | set(extra))
        if not units:
            self._skip_once(None, None, "nothing-to-stop")
            return
        self.stop_unit(units[0], now)

    def stop_unit(self, unit: StopUnit, now: float) -> None:
        if unit.note:
            log.info("%s: cgroup freeze not possible (%s); using signals", unit.key, unit.note)
        record = StoppedRecord(unit=unit, since=time.time())
        self.stopped.append(record)
        self.stopped_at[unit.key] = now
        self._save()  # recorded BEFORE the signal is sent
        result = self._freezer(unit).freeze(unit)
        if unit.kind is UnitKind.PROCESS_GROUP and not self.config.dry_run:
            unit, result = self._stop_group_newcomers(unit, result)
        if not result.done:
            self.stopped.pop()
            self.stopped_at.pop(unit.key, None)
            self._save()
            log.debug("unit %s vanished before it could be stopped", unit.key)
            return
        if len(result.done) != len(unit.members):
            unit = unit.with_members(result.done)
            self.stopped[-1] = replace(self.stopped[-1], unit=unit)
            self._save()
        leader = unit.members[0]
        self.events.emit(
            ev.STOP,
            pid=leader.pid,
            comm=leader.comm,
            reason="pressure",
            pressure=self.reading,
            pids=unit.pids,
            unit=unit.key,
            kind=unit.kind.value,
            method=unit.method.value,
            rss_kb=unit.rss_kb,
            swap_kb=unit.swap_kb,
            note=unit.note,
            dry_run=self.config.dry_run,
        )
        log.info("stopped %s (%s, rss %d kB)%s", unit.key, leader.comm, unit.rss_kb, " [dry run]" if self.config.dry_run else "")

    def _stop_group_newcomers(self, unit: StopUnit, result: FreezeResult) -> tuple[StopUnit, FreezeResult]:
        """A group member may have forked between our scan and its SIGSTOP: stop and record the
        newcomers too (each is recorded before it is signalled)."""
        pgid = int(unit.key.split(":", 1)[1])
        for _ in range(5):
            table = ProcessTable.scan()
            known = set(unit.pids)
            newcomers = [
                Member.from_stat(table.stats[p])
                for p in table.group_members(pgid)
                if p not in known and not table.stats[p].is_zombie
            ]
            if not newcomers:
                break
            unit = unit.with_members(unit.members + tuple(newcomers))
            self.stopped[-1] = replace(self.stopped[-1], unit=unit)
            self.store.save(self.stopped)
            result.merge(SignalFreezer().freeze(unit.with_members(newcomers)))
        return unit, result

    # == freezing, and its record on disk (neither in a dry run) ===================================
    def _freezer(self, unit: StopUnit) -> Freezer:
        return DryRunFreezer() if self.config.dry_run else freezer_for(unit)

    def _save(self) -> None:
        if not self.config.dry_run:
            self.store.save(self.stopped)

    # == resuming ==================================================================================
    def _swapped_kb(self, unit: StopUnit) -> int:
        """What resuming the unit will page back in: its VmSwap. (Its resident pages are
        already counted as used; requiring room for them again would keep it stopped for
        good once the balloon has deflated.)"""
        total = 0
        for member in unit.members:
            if is_same_process(member.pid, member.starttime):
                total += read_memory(member.pid).swap_kb
        return total

    def resume_next(self, now: float) -> None:
        factor = self.config.resume_headroom
        available = read_mem_available_kb() if factor > 0 else 0
        for index in range(len(self.stopped) - 1, -1, -1):
            unit = self.stopped[index].unit
            if factor > 0:
                # Linked to the balloon: while it is still inflated there is no room for the
                # unit's swapped-out pages, and resuming would only bring the pressure back.
                need = self._swapped_kb(unit) * factor + self.config.resume_reserve_kb
                if available < need:
                    if unit.key not in self.reported_blocked:
                        self.reported_blocked.add(unit.key)
                        self.events.emit(
                            ev.SKIP,
                            pid=unit.members[0].pid,
                            comm=unit.comm,
                            reason="resume-blocked:headroom",
                            pressure=self.reading,
                            unit=unit.key,
                            need_kb=int(need),
                            available_kb=available,
                        )
                    continue
            self._resume_record(index, "calm")
            break
        # Between two resumes -- or two headroom checks -- wait for a fresh pressure window.
        self.next_resume_at = now + self.config.stop_interval

    def _expire_max_stopped(self, now: float) -> None:
        limit = self.config.max_stopped
        if limit is None:
            return
        for record in list(self.stopped):
            if now - self.stopped_at.get(record.unit.key, now) >= limit:
                for member in record.unit.members:
                    self.cooldown[(member.pid, member.starttime)] = now + self.thresholds.hold
                self._resume_record(self.stopped.index(record), "max-stopped")
        self.cooldown = {key: until for key, until in self.cooldown.items() if until > now}

    def _resume_record(self, index: int, reason: str) -> None:
        record = self.stopped[index]
        unit = record.unit
        result = self._freezer(unit).thaw(unit)
        del self.stopped[index]
        self.stopped_at.pop(unit.key, None)
        self.last_resume_at = time.monotonic()
        self._save()  # after the signal: a crash in between only repeats it
        if not result.done:
            return  # all gone: dropped quietly
        leader = result.done[0]
        self.events.emit(
            ev.RESUME,
            pid=leader.pid,
            comm=leader.comm,
            reason=reason,
            pressure=self.reading,
            pids=[m.pid for m in result.done],
            unit=unit.key,
            method=unit.method.value,
            stopped_for=round(time.time() - record.since, 3),
            dry_run=self.config.dry_run,
        )
        log.info("resumed %s (%s): %s", unit.key, leader.comm, reason)

    def resume_all(self, reason: str) -> None:
        while self.stopped:
            try:
                self._resume_record(len(self.stopped) - 1, reason)
            except Exception:
                # Keep going: the state file still lists it, so the watchdog/ExecStopPost retry.
                log.exception("failed to resume %s", self.stopped[-1].unit.key)
                self.stopped.pop()

    # == control ===================================================================================
    def handle_request(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd", "status")
        if cmd == "ping":
            return {"ok": True, "pid": os.getpid()}
        if cmd != "status":
            return {"error": f"unknown command {cmd!r} (known: status, ping)"}
        now = time.monotonic()
        if self.classification is None or now - self.last_scan_at > STATUS_MAX_AGE:
            self.scan(now)
        return self.status()

    def status(self) -> dict[str, Any]:
        cls = self.classification
        protected, never_stop, distinct = [], [], []
        if cls is not None:
            for pid, verdict in sorted(cls.verdicts.items()):
                if pid not in cls.infos:
                    continue
                entry = {"pid": pid, "comm": cls.infos[pid].comm, "reason": verdict.reason}
                if verdict.category is Category.PROTECTED:
                    protected.append(entry)
                elif verdict.category is Category.NEVER_STOP:
                    never_stop.append(entry)
                else:
                    distinct.append(pid)
        stopped = [
            {
                "pid": m.pid,
                "comm": m.comm,
                "since": r.since,
                "unit": r.unit.key,
                "method": r.unit.method.value,
            }
            for r in self.stopped
            for m in r.unit.members
        ]
        return {
            "state": self.state.value,
            "level": self.level.value,
            "pressure": self.reading.as_event(),
            "daemon_pid": os.getpid(),
            "watchdog_pid": self.watchdog.pid if self.watchdog else None,
            "dry_run": self.config.dry_run,
            "protected": protected,
            "never_stop": never_stop,
            "distinct": distinct,
            "stopped": stopped,
            "config": self.describe_config(),
        }

    def describe_config(self) -> dict[str, Any]:
        cfg = self.config
        sel = cfg.selection
        return {
            "source": self.source.describe() if self.source else None,
            "stop_above": self.thresholds.stop_above,
            "resume_below": self.thresholds.resume_below,
            "hold": self.thresholds.hold,
            "stop_interval": cfg.stop_interval,
            "resume_headroom": cfg.resume_headroom,
            "resume_reserve_kb": cfg.resume_reserve_kb,
            "max_stopped": cfg.max_stopped,
            "method": cfg.method.value,
            "dry_run": cfg.dry_run,
            "scope": {"pid": sel.scope_pid, "cgroup": sel.scope_cgroup},
            "protect": {"pids": list(sel.protect_pids), "cgroups": list(sel.protect_cgroups), "comms": list(sel.protect_comms)},
            "never_stop": {"comms": list(sel.never_stop_comms), "cgroups": list(sel.never_stop_cgroups)},
            "state_dir": cfg.state_dir,
        }


def run_daemon(config: DaemonConfig, log_level: str = "INFO") -> int:
    return Daemon(config, log_level).run()


__all__ = ["Daemon", "DaemonState", "StartupError", "run_daemon"]
