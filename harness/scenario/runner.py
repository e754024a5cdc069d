"""Running a scenario: boot, start the workloads, drive the balloon, record everything,
and leave a run folder that someone can attach to a bug report.

Host-side decisions are limited to the schedule (when to start a workload, where to move
the balloon): every pressure decision is made inside the guest by the Intermediate daemon,
because under real overcommit the guest can stop answering SSH for a minute.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.balloon import BalloonController
from harness.errors import HarnessError
from harness.guest.intermediate.held import held_labels
from harness.guestcode import GUEST_ROOT, install_guest_code
from harness.intermediate import (
    STATE_DIR,
    read_events,
    start_intermediate,
    stop_intermediate,
)
from harness.ledger import HostSampler, Ledger, measure_clock_offset, start_guest_sampler, stop_guest_sampler
from harness.machine.base import Machine
from harness.machine.factory import MachineFactory
from harness.plot import plot_run
from harness.scenario.model import Scenario
from harness.scenario.report import ExpectationResult, check_expectations, summarize, verdict
from harness.workloads import read_progress, start_workload, stop_all_workloads, workload_status

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

# What is held in the guest: processes in state T and the tasks of frozen cgroups (JSON).
LIST_HELD = f"cd {GUEST_ROOT} && python3 -m harness.guest.intermediate held"


@dataclass
class RunResult:
    scenario: Scenario
    mode: str
    folder: Path
    summary: dict
    expectations: list[ExpectationResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(e.passed for e in self.expectations)

    def failures(self) -> list[ExpectationResult]:
        return [e for e in self.expectations if not e.passed]


class _Schedule(threading.Thread):
    """Executes the balloon steps on time and measures when each target is reached."""

    def __init__(self, scenario: Scenario, controller: BalloonController, sampler: HostSampler,
                 t0: float, stop: threading.Event, record: Callable[[dict], None]) -> None:
        super().__init__(name="balloon-schedule", daemon=True)
        self.scenario, self.controller, self.sampler = scenario, controller, sampler
        self.t0, self.stop_event, self.record = t0, stop, record
        self.steps: list[dict] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            current = float(self.controller.balloon.max_mib)
            steps = self.scenario.balloon
            for i, step in enumerate(steps):
                if self.stop_event.wait(max(0.0, self.t0 + step.at_s - time.time())):
                    return
                started = time.time()
                self.record({"event": "balloon-step", "target_mib": step.target_mib, "ramp_s": step.ramp_s})
                self.sampler.note_target(step.target_mib)
                self.controller.ramp(current, step.target_mib, step.ramp_s, should_stop=self.stop_event.is_set)
                current = step.target_mib
                # Until the next step (or the time limit), watch `actual` approach the target.
                horizon = (self.t0 + steps[i + 1].at_s) if i + 1 < len(steps) else (self.t0 + self.scenario.time_limit_s)
                result = self.controller.wait_until(step.target_mib, timeout=max(1.0, horizon - time.time()))
                closest = result.actual_mib
                entry = {"target_mib": step.target_mib, "at_s": step.at_s,
                         "direction": "down" if step.target_mib < self.controller.balloon.max_mib else "up",
                         "reached": result.reached, "closest_mib": round(closest, 1),
                         "seconds_to_reach": round(time.time() - started, 1) if result.reached else None}
                self.steps.append(entry)
                self.record({"event": "balloon-result", **entry})
        except BaseException as exc:
            self.error = exc


class ScenarioRunner:
    def __init__(self, scenario: Scenario, factory: MachineFactory, folder: Path, *,
                 intermediate: bool, progress: Progress = lambda _m: None) -> None:
        self.scenario = scenario
        self.factory = factory
        self.folder = folder
        self.mode = "on" if intermediate else "off"
        self.progress = progress
        self.harness_events: list[dict] = []
        self.ssh_silence_longest = 0.0

    def _record(self, event: dict) -> None:
        event = {"t": round(time.time(), 3), **event}
        self.harness_events.append(event)
        log.info("%s", event)

    def run(self) -> RunResult:
        sc = self.scenario
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "scenario.toml").write_text(sc.text)
        spec = self.factory.defaults.with_(name=f"{self.mode}-run", memory_mib=sc.vm.memory_mib,
                                           cpus=sc.vm.cpus, swap=sc.vm.swap,
                                           **({"backend": sc.vm.backend} if sc.vm.backend else {}))
        self.progress(f"[{self.mode}] starting a {sc.vm.memory_mib} MiB guest (swap {sc.vm.swap})")
        machine = self.factory.start(spec)
        try:
            return self._run_on(machine)
        finally:
            self.factory.release(machine, artifacts_dir=self.folder)

    def _run_on(self, machine: Machine) -> RunResult:
        sc = self.scenario
        install_guest_code(machine)
        offset = measure_clock_offset(machine)
        self._record({"event": "clock-offset", "guest_minus_host_s": round(offset, 3)})
        if self.mode == "on":
            options = sc.intermediate.options(protect_cgroups=tuple(w.cgroup for w in sc.protected))
            start_intermediate(machine, options)
            self._record({"event": "intermediate-started", "argv": options.argv()})
        start_guest_sampler(machine, {w.name: w.progress_path for w in sc.workloads},
                            STATE_DIR if self.mode == "on" else None)
        controller = BalloonController(machine.balloon)
        sampler = HostSampler(machine, controller)
        sampler.note_target(machine.balloon.max_mib)
        stop = threading.Event()
        t0 = time.time()
        sampler.start()
        schedule = _Schedule(sc, controller, sampler, t0, stop, self._record)
        schedule.start()
        try:
            statuses = self._drive_workloads(machine, t0)
        finally:
            stop.set()
            schedule.join(30)
        self.progress(f"[{self.mode}] workloads finished; giving the guest its memory back")
        controller.resize(machine.balloon.max_mib, timeout=machine.timeouts.command)
        sampler.note_target(machine.balloon.max_mib)
        return self._collect(machine, t0, offset, sampler, schedule, statuses)

    def _drive_workloads(self, machine: Machine, t0: float) -> dict[str, dict]:
        sc = self.scenario
        pending = sorted(sc.workloads, key=lambda w: w.start_at_s)
        started: dict[str, float] = {}
        finished: dict[str, dict] = {}
        deadline = t0 + sc.time_limit_s
        last_ok = time.time()
        while time.time() < deadline:
            now = time.time()
            while pending and now >= t0 + pending[0].start_at_s:
                spec = pending.pop(0)
                start_workload(machine, spec)
                started[spec.name] = time.time()
                self._record({"event": "workload-started", "name": spec.name, "role": spec.role.value})
                self.progress(f"[{self.mode}] t={now - t0:5.1f}s started {spec.name} ({spec.kind.value}, {spec.role.value})")
            try:
                for name in [n for n in started if n not in finished]:
                    status = workload_status(machine, name, timeout=15)
                    if status.finished:
                        finished[name] = {"active_state": status.active_state, "result": status.result,
                                          "exit_status": status.exit_status}
                        self._record({"event": "workload-finished", "name": name, **finished[name]})
                        self.progress(f"[{self.mode}] t={time.time() - t0:5.1f}s {name} finished: {status.result}")
                self.ssh_silence_longest = max(self.ssh_silence_longest, time.time() - last_ok)
                last_ok = time.time()
            except HarnessError as exc:
                # The guest is too busy to answer: that is the overcommit we came to see.
                silence = time.time() - last_ok
                self.ssh_silence_longest = max(self.ssh_silence_longest, silence)
                self._record({"event": "ssh-unresponsive", "for_s": round(silence, 1), "error": str(exc)[:200]})
            if not pending and len(finished) == len(sc.workloads):
                break
            time.sleep(1.0)  # status polling period
        else:
            self._record({"event": "time-limit", "limit_s": sc.time_limit_s})
            self.progress(f"[{self.mode}] time limit {sc.time_limit_s:.0f} s reached")
        return finished

    def _collect(self, machine: Machine, t0: float, offset: float, sampler: HostSampler,
                 schedule: _Schedule, statuses: dict[str, dict]) -> RunResult:
        sc = self.scenario
        command_timeout = machine.timeouts.command
        daemon_end_t = None
        if self.mode == "on":
            stop_intermediate(machine, timeout=command_timeout)  # SIGTERM: it resumes what it holds
            daemon_end_t = time.time() + offset
        left_stopped = held_labels(machine.ssh.run(LIST_HELD, timeout=command_timeout).stdout)
        guest_rows = stop_guest_sampler(machine, timeout=command_timeout)
        sampler.stop()
        daemon_events = read_events(machine) if self.mode == "on" else []
        for event in daemon_events:
            if "t" in event:
                event["t_host"] = event["t"] - offset
        workloads: dict[str, dict] = {}
        for spec in sc.workloads:
            records = read_progress(machine, spec)
            final = next((r for r in reversed(records) if r.get("event") in ("done", "failed")), None)
            status = statuses.get(spec.name) or vars(workload_status(machine, spec.name))
            workloads[spec.name] = {
                "role": spec.role.value, "kind": spec.kind.value, **{k: status.get(k) for k in ("result", "exit_status")},
                "completed": bool(final and final.get("event") == "done" and status.get("result") == "success"),
                "items_per_s": final.get("items_per_s") if final else None,
                "items": final.get("items") if final else None,
            }
            _write_jsonl(self.folder / f"workload-{spec.name}.jsonl", records)
        stop_all_workloads(machine, timeout=command_timeout)
        dmesg = machine.ssh.run("dmesg", timeout=command_timeout, check=False).stdout
        (self.folder / "dmesg.txt").write_text(dmesg)

        ledger = Ledger.merge(t0, sampler.records, guest_rows, offset, [w.name for w in sc.workloads])
        ledger.write(self.folder)
        _write_jsonl(self.folder / "intermediate-events.jsonl", daemon_events)
        _write_jsonl(self.folder / "harness-events.jsonl", self.harness_events)
        plot_run(ledger, daemon_events, f"{sc.name}: Intermediate {self.mode}", self.folder / "plot.png")
        if machine.serial_log.exists():
            shutil.copy2(machine.serial_log, self.folder / "serial.log")
        if schedule.error is not None:
            raise schedule.error
        summary = summarize(sc, self.mode, ledger, schedule.steps, workloads, daemon_events, dmesg,
                            left_stopped, self.ssh_silence_longest, daemon_end_t, str(sc.vm.swap))
        summary["folder"] = str(self.folder)
        summary["plot"] = str(self.folder / "plot.png")
        expectations = check_expectations(sc, summary)
        summary["expectations"] = [vars(e) for e in expectations]
        (self.folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        return RunResult(sc, self.mode, self.folder, summary, expectations)


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def run_scenario(scenario: Scenario, factory: MachineFactory, folder: Path, *, intermediate: bool | None = None,
                 progress: Progress = lambda _m: None) -> RunResult:
    """One run. `intermediate=None` follows the scenario's [intermediate] enabled."""
    enabled = scenario.intermediate.enabled if intermediate is None else intermediate
    return ScenarioRunner(scenario, factory, folder, intermediate=enabled, progress=progress).run()


def compare_scenario(scenario: Scenario, factory: MachineFactory, folder: Path,
                     progress: Progress = lambda _m: None) -> tuple[RunResult, RunResult]:
    """The same scenario twice, on fresh guests: plain ballooning, then with the daemon."""
    off = run_scenario(scenario, factory, folder / "off", intermediate=False, progress=progress)
    on = run_scenario(scenario, factory, folder / "on", intermediate=True, progress=progress)
    comparison = {"scenario": scenario.name, "off": off.summary, "on": on.summary,
                  "verdict": verdict(off.summary, on.summary)}
    (folder / "summary.json").write_text(json.dumps(comparison, indent=2, default=str) + "\n")
    return off, on


def new_run_folder(root: Path, scenario: Scenario) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = root / f"{stamp}-{scenario.name}"
    n = 2
    while folder.exists():
        folder = root / f"{stamp}-{scenario.name}-{n}"
        n += 1
    folder.mkdir(parents=True)
    return folder
