"""One guest of a scenario: made ready (guest code, clock offset, daemon, sampler, starting
balloon), its workloads started on time and watched, and its end-of-run evidence collected.
Each guest runs on its own thread; a guest that dies (host OOM killer) or stops answering
SSH is recorded, never fatal to the others."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from harness.errors import HarnessError
from harness.guest.intermediate.held import held_labels
from harness.guestcode import GUEST_ROOT, install_guest_code
from harness.intermediate import EVENTS, STATE_DIR, read_events, start_intermediate, stop_intermediate
from harness.ledger import measure_clock_offset, start_guest_sampler, stop_guest_sampler
from harness.scenario.evidence import FINAL, write_jsonl
from harness.scenario.monitor import GuestHandle
from harness.scenario.spec import GuestSection
from harness.workloads import read_progress, start_workload, stop_all_workloads, workload_status

log = logging.getLogger(__name__)

Record = Callable[[dict], None]
Progress = Callable[[str], None]

# What is held in the guest: processes in state T and the tasks of frozen cgroups (JSON).
LIST_HELD = f"cd {GUEST_ROOT} && python3 -m harness.guest.intermediate held"


class GuestDriver:
    def __init__(self, section: GuestSection, handle: GuestHandle, folder: Path, record: Record,
                 progress: Progress, label: str) -> None:
        self.section = section
        self.handle = handle
        self.machine = handle.machine
        self.folder = folder / section.name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.record = record
        self.progress = progress
        self.label = label
        self.offset = 0.0
        self.statuses: dict[str, dict] = {}
        self.ssh_silence_longest = 0.0

    def _say(self, t0: float, text: str) -> None:
        self.progress(f"[{self.label}] t={time.time() - t0:5.1f}s {self.section.name}: {text}")

    # -- before the clock starts --------------------------------------------------------
    def prepare(self) -> None:
        g, machine = self.section, self.machine
        install_guest_code(machine)
        self.offset = measure_clock_offset(machine)
        self.record({"event": "clock-offset", "vm": g.name, "guest_minus_host_s": round(self.offset, 3)})
        if g.intermediate.enabled:
            options = g.intermediate.options(protect_cgroups=tuple(w.cgroup for w in g.protected))
            start_intermediate(machine, options)
            self.record({"event": "intermediate-started", "vm": g.name, "argv": options.argv()})
        start_guest_sampler(machine, {w.name: w.progress_path for w in g.workloads},
                            STATE_DIR if g.intermediate.enabled else None,
                            forward={"intermediate": EVENTS} if g.intermediate.enabled else None)
        if g.balloon_start_mib is not None:
            result = self.handle.controller.resize(g.balloon_start_mib, timeout=machine.timeouts.command)
            self.handle.target_mib = g.balloon_start_mib
            self.record({"event": "balloon-start", "vm": g.name, "target_mib": g.balloon_start_mib,
                         "reached": result.reached, "actual_mib": round(result.actual_mib, 1)})

    # -- the run ------------------------------------------------------------------------
    def drive(self, t0: float, deadline: float, stop: Callable[[], bool]) -> None:
        """Start the workloads on time and poll their state until all have finished, the
        time limit passes, the run is stopped, or the guest dies."""
        pending = sorted(self.section.workloads, key=lambda w: w.start_at_s)
        started: list[str] = []
        last_ok = time.time()
        while time.time() < deadline and not stop():
            if not self.handle.alive:
                self._say(t0, "its QEMU is gone; no more workloads here")
                return
            try:
                while pending and time.time() >= t0 + pending[0].start_at_s:
                    spec = pending.pop(0)
                    start_workload(self.machine, spec)
                    started.append(spec.name)
                    self.record({"event": "workload-started", "vm": self.section.name, "name": spec.name,
                                 "role": spec.role.value})
                    self._say(t0, f"started {spec.name} ({spec.kind.value}, {spec.role.value})")
                for name in [n for n in started if n not in self.statuses]:
                    status = workload_status(self.machine, name, timeout=15)
                    if status.finished:
                        self.statuses[name] = {"active_state": status.active_state, "result": status.result,
                                               "exit_status": status.exit_status}
                        self.record({"event": "workload-finished", "vm": self.section.name, "name": name,
                                     **self.statuses[name]})
                        self._say(t0, f"{name} finished: {status.result}")
                self.ssh_silence_longest = max(self.ssh_silence_longest, time.time() - last_ok)
                last_ok = time.time()
            except HarnessError as exc:
                # The guest is too busy to answer: that is the overcommit we came to see.
                silence = time.time() - last_ok
                self.ssh_silence_longest = max(self.ssh_silence_longest, silence)
                self.record({"event": "ssh-unresponsive", "vm": self.section.name, "for_s": round(silence, 1),
                             "error": str(exc)[:200]})
            if not pending and len(self.statuses) == len(self.section.workloads):
                return
            time.sleep(1.0)  # status polling period

    # -- after ----------------------------------------------------------------------------
    def collect(self) -> None:
        """What only SSH can fetch, while the guest still answers: written into <vm>/."""
        g, machine = self.section, self.machine
        final: dict = {"ssh_longest_silence_s": round(self.ssh_silence_longest, 1), "statuses": self.statuses,
                       "alive": self.handle.alive}
        if not self.handle.alive:
            (self.folder / FINAL).write_text(json.dumps(final, indent=2) + "\n")
            return
        timeout = machine.timeouts.command
        try:
            self.handle.controller.resize(machine.balloon.max_mib, timeout=timeout)  # give the memory back
            self.handle.target_mib = float(machine.balloon.max_mib)
            if g.intermediate.enabled:
                stop_intermediate(machine, timeout=timeout)  # SIGTERM: it resumes what it holds
                final["daemon_end_t"] = time.time() + self.offset
            final["left_stopped"] = held_labels(machine.ssh.run(LIST_HELD, timeout=timeout).stdout)
            write_jsonl(self.folder / "ledger-guest.jsonl", stop_guest_sampler(machine, timeout=timeout))
            if g.intermediate.enabled:
                write_jsonl(self.folder / "intermediate-events.jsonl", read_events(machine))
            for spec in g.workloads:
                write_jsonl(self.folder / f"workload-{spec.name}.jsonl", read_progress(machine, spec))
                if spec.name not in self.statuses:
                    status = workload_status(machine, spec.name, timeout=timeout)
                    self.statuses[spec.name] = {"active_state": status.active_state, "result": status.result,
                                                "exit_status": status.exit_status}
            stop_all_workloads(machine, timeout=timeout)
        except HarnessError as exc:
            final["collect_error"] = str(exc)[:500]
            log.warning("%s: collecting evidence failed: %s", g.name, exc)
        (self.folder / FINAL).write_text(json.dumps(final, indent=2, default=str) + "\n")
