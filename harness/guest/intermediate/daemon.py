"""The daemon: a thin shell around the decision core (core.py).

Each turn of the loop reads the pressure, lets the core decide (reading a scan of /proc or the
memory figures only when the core asks for them), records the inputs it decided on in the event
log, and performs the actions: the freezer signals, the state file follows every stop (before
the signal) and every resume (after it succeeded).
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from . import events as ev
from .actions import Performer, StartupError
from .classify import Category, Classification, Classifier
from .config import DaemonConfig
from .control import ControlServer
from .core import CoreState, DaemonState, Decision, Emit, Held, Rules, decide, release_all
from .events import EventLog
from .freezer import FreezeResult
from .observe import Observer
from .pageout import Pager
from .pressure import FilePressureSource, PressureReading, PressureSource, PsiTriggerSource
from .reading import IDLE_READING
from .recovery import resume_recorded
from .snapshot import InputEncoder, Observation, Scan
from .state import StateStore
from .watchdog import spawn_watchdog

log = logging.getLogger(__name__)

STATUS_MAX_AGE = 1.0  # a status request classifies afresh if the last scan is older than this
THREAD_STACK = 512 * 1024


@dataclass(frozen=True)
class PreparedScan:
    """A scan taken when the early trigger fired, for the stop that is likely to follow."""

    at: float  # time.monotonic()
    held: tuple[str, ...]  # the held units it was taken with (their facts are in it)
    scan: Scan
    classification: Classification


def open_source(config: DaemonConfig) -> PressureSource:
    if config.pressure_file:
        try:
            return FilePressureSource(config.pressure_file, config.window, config.file_poll_interval)
        except OSError as exc:
            raise StartupError(f"cannot read --pressure-file {config.pressure_file}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise StartupError(f"--pressure-file {config.pressure_file} is not in PSI format: {exc}") from None
    try:
        return PsiTriggerSource(config.psi_path, config.thresholds.stop_above, config.window, config.early_fraction)
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


def monotonic_ms() -> float:
    """The core's clock: rounded to the millisecond, so the logged value is the value decided on."""
    return round(time.monotonic(), 3)


class Daemon:
    def __init__(self, config: DaemonConfig, log_level: str = "INFO") -> None:
        self.config = config
        self.log_level = log_level
        self.rules = Rules.of(config)
        try:
            self.events = EventLog(config.events_path)
        except OSError as exc:
            raise StartupError(f"cannot open --events {config.events_path}: {exc.strerror or exc}") from None
        self.store = StateStore(config.state_dir)
        self.classifier = Classifier(config.selection, self_pids={os.getpid()})
        self.observer = Observer(self.classifier, config.method)
        self.pager: Pager | None = None
        self.performer = Performer(config, self.store, self.events, self.observer)
        self.encoder = InputEncoder()
        # Read by the control thread: each is replaced whole, never changed in place.
        self.state = CoreState()
        self.reading: PressureReading | None = IDLE_READING
        self.classification: tuple[float, Classification] | None = None  # (monotonic time, classification)
        self.ticks = 0
        self._last_logged_p: list[float] | None | str = "never"
        self.exit_reason: str | None = None
        self.source: PressureSource | None = None
        self.control: ControlServer | None = None
        self.watchdog: subprocess.Popen | None = None
        self._watchdog_pidfd: int | None = None
        self._wakeup_r = self._wakeup_w = -1
        self._poller = select.poll()
        self._prepared: PreparedScan | None = None

    # == lifecycle =================================================================================
    def setup(self) -> None:
        cfg = self.config
        if cfg.mlock:
            lock_memory()
            # mlockall(MCL_FUTURE) makes every thread's whole stack resident: the control and
            # page-out threads need far less than the default 8 MiB each.
            threading.stack_size(THREAD_STACK)
        # Open the pressure source first: it is the likeliest thing to be misconfigured.
        self.source = open_source(cfg)
        recovered = FreezeResult()
        if cfg.dry_run:
            # Never signals, so it needs neither the lock, nor recovery, nor a watchdog.
            leftovers = len(self.performer.recorded() or [])
            if leftovers:
                log.warning("dry run: state dir %s lists %d stopped unit(s); left alone", cfg.state_dir, leftovers)
        else:
            try:
                self.store.lock()
            except OSError as exc:
                raise StartupError(f"cannot use --state-dir {cfg.state_dir}: {exc.strerror or exc}") from None
            # A crashed predecessor may have left processes stopped: resume them first. What
            # cannot be resumed stays recorded, and this daemon holds it (and retries).
            recovered, remaining = resume_recorded(self.store, self.events, "recovered")
            now = monotonic_ms()
            adopted = tuple(Held(unit=r.unit, since=r.since, stopped_at=now, retry_at=now + cfg.stop_interval)
                            for r in remaining)
            self.state = CoreState(held=adopted)
            self.performer.saved = list(remaining)
        if cfg.control_path:
            try:
                self.control = ControlServer(cfg.control_path, self.handle_request)
            except OSError as exc:
                raise StartupError(f"cannot listen on --control {cfg.control_path}: {exc.strerror or exc}") from None
        self._install_signals()
        if not cfg.dry_run:
            self._start_watchdog()
            if cfg.page_out:
                self.pager = self.performer.pager = Pager(self.events, cfg.page_out_via).start()
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
            rules=self.rules.to_dict(),
            held=[{"since": h.since, "stopped_at": h.stopped_at, "retry_at": h.retry_at, "unit": h.unit.to_dict()}
                  for h in self.state.held],
        )
        if self.control:
            self.control.start()
        log.info(
            "started: source=%s method=%s stop-above=%s resume-below=%s hold=%s scope=%s dry-run=%s",
            self.source.describe(),
            cfg.method.value,
            cfg.thresholds.stop_above,
            cfg.thresholds.resume_below,
            cfg.thresholds.hold,
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
            if self.state.held:
                now = monotonic_ms()
                obs = Observation(now=now, wall=time.time(), reading=self.reading)
                self.events.emit_input(obs.wall, {"m": now, "release": "exit"})
                self.state = self.performer.perform(release_all(self.state, self.rules, obs, "exit"), obs)
        finally:
            if self.pager is not None:
                self.pager.close()  # after the resumes above cancelled what was left
            if emit_exit:
                self.events.emit(ev.EXIT, pid=os.getpid(), comm="intermediate", reason=self.exit_reason or "exit",
                                 pressure=self.reading)
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
            if self.performer.recorded() == []:
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
        assert self.source is not None
        fd = self.source.fileno()
        if fd is not None:
            self._poller.register(fd, select.POLLPRI)
        early = self.source.early_fileno()
        if early is not None:
            self._poller.register(early, select.POLLPRI)
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
        early_fd = self.source.early_fileno()
        while self.exit_reason is None:
            idle = self.state.phase is DaemonState.CALM and not self.state.held
            interval = self.source.idle_interval if idle else self.source.busy_interval
            for fd, revents in self._poller.poll(interval * 1000):
                if fd == self._wakeup_r:
                    try:
                        os.read(self._wakeup_r, 512)
                    except BlockingIOError:
                        pass
                elif fd == source_fd:
                    self.source.on_ready(revents)
                    if self.source.fileno() is None:
                        self._poller.unregister(fd)
                        source_fd = None
                elif fd == early_fd:
                    if self.source.on_early(revents):
                        self.prepare_scan()
                    if self.source.early_fileno() is None:
                        self._poller.unregister(fd)
                        early_fd = None
                elif fd == self._watchdog_pidfd:
                    self._on_watchdog_death()
            if self.exit_reason is not None:
                break
            self.tick()

    def tick(self) -> None:
        """Read, decide, record the inputs, act."""
        assert self.source is not None
        reading = self.source.read()
        if reading is not None:
            reading = reading.quantized()
        obs = Observation(now=monotonic_ms(), wall=time.time(), reading=reading)
        timing = {"scan": 0.0, "decide": 0.0}
        while True:
            started = time.perf_counter()
            result = decide(self.state, self.rules, obs)
            timing["decide"] += time.perf_counter() - started
            if isinstance(result, Decision):
                break
            started = time.perf_counter()
            if result.scan and obs.scan is None:
                prepared = self.take_prepared()
                if prepared is not None:
                    timing["prepared_age"] = time.monotonic() - prepared.at
                    scan = prepared.scan
                else:
                    scan, cls = self.observer.scan(self.state.held)
                    self.classification = (time.monotonic(), cls)
                obs = replace(obs, scan=scan)
            elif result.memory_for and obs.memory is None:
                obs = replace(obs, memory=self.observer.memory(result.memory_for))
            else:
                raise RuntimeError(f"the decision core asked again for {result}")
            timing["scan"] += time.perf_counter() - started
        self.ticks += 1
        p = reading.as_list() if reading is not None else None
        if result.actions or result.state != self.state or obs.scan or obs.memory or p != self._last_logged_p:
            # Ticks that change nothing and read nothing new are left out: a replay skips them losslessly.
            self.events.emit_input(obs.wall, self.encoder.encode(obs))
            self._last_logged_p = p
        self.reading = reading
        self.state = self.performer.perform(result, obs, {k: round(v * 1000, 3) for k, v in timing.items()})
        if obs.scan is not None:
            self._prepared = None  # a decision made on a scan: a prepared one is no longer ahead
        if any(isinstance(a, Emit) and a.event == "pressure" and a.extra[1][1] is not None for a in result.actions):
            log.info("pressure %s -> state %s (%s)", self.state.level.value, self.state.phase.value,
                     reading.as_event() if reading else "no reading")

    # == the early trigger: a scan ready before the threshold is crossed ============================
    def prepare_scan(self) -> None:
        """The pressure is half-way to --stop-above: scan now, while waiting costs nothing, so
        that a stop within the next window does not wait for a scan (under TCG a scan of /proc is
        most of the way from the crossing to the stop). At most one scan per window."""
        prepared = self._prepared
        if prepared is not None and time.monotonic() - prepared.at < self._prepared_max_age():
            return
        scan, cls = self.observer.scan(self.state.held)
        now = time.monotonic()
        self.classification = (now, cls)
        self._prepared = PreparedScan(now, tuple(h.unit.key for h in self.state.held), scan, cls)

    def take_prepared(self) -> PreparedScan | None:
        """The prepared scan, once, if it is younger than a window and was taken with the units
        held now; else None (scan afresh)."""
        prepared, self._prepared = self._prepared, None
        if prepared is None or time.monotonic() - prepared.at > self._prepared_max_age():
            return None
        if prepared.held != tuple(h.unit.key for h in self.state.held):
            return None
        return prepared

    def _prepared_max_age(self) -> float:
        return getattr(self.source, "window", self.config.window)

    # == control (served by the control thread: reads snapshots only) ==============================
    def handle_request(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd", "status")
        if cmd == "ping":
            return {"ok": True, "pid": os.getpid(), "ticks": self.ticks}
        if cmd != "status":
            return {"error": f"unknown command {cmd!r} (known: status, ping)"}
        latest = self.classification
        if latest is None or time.monotonic() - latest[0] > STATUS_MAX_AGE:
            latest = (time.monotonic(), self.observer.classify())
            self.classification = latest
        return self.status(latest[1])

    def status(self, cls: Classification | None) -> dict[str, Any]:
        state, reading = self.state, self.reading
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
            {"pid": m.pid, "comm": m.comm, "since": h.since, "unit": h.unit.key, "method": h.unit.method.value}
            for h in state.held
            for m in h.unit.members
        ]
        return {
            "state": state.phase.value,
            "level": state.level.value,
            "pressure": reading.as_event() if reading is not None else None,
            "daemon_pid": os.getpid(),
            "watchdog_pid": self.watchdog.pid if self.watchdog else None,
            "dry_run": self.config.dry_run,
            "ticks": self.ticks,
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
            "stop_above": cfg.thresholds.stop_above,
            "resume_below": cfg.thresholds.resume_below,
            "hold": cfg.thresholds.hold,
            "stop_interval": cfg.stop_interval,
            "resume_headroom": cfg.resume_headroom,
            "resume_reserve_kb": cfg.resume_reserve_kb,
            "resume_grace": cfg.resume_grace,
            "max_stopped": cfg.max_stopped,
            "min_rss_kb": cfg.min_rss_kb,
            "page_out": cfg.page_out,
            "page_out_via": cfg.page_out_via.value,
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
