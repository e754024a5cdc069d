"""A run folder: what is written into it while the run goes, and reading it back.

Written as it happens (appended and flushed, so a run killed by SIGKILL keeps everything up
to its last seconds):

    run.json                 what ran: scenario, variant, start time, guests, budget
    harness-events.jsonl     the harness's own events (boot, clock offsets, balloon targets
                             and why, workload starts and ends, SSH silences, VM deaths)
    ledger-host.jsonl        host-side samples, per guest and host-wide
    <vm>/guest-stream.jsonl  the guest's samples and the daemon's events, written by QEMU
                             from the guest's virtio-serial port

Written at the end when the guest still answers (a rebuild does without them):

    <vm>/final.json          left-stopped processes, workload exit states, SSH silence
    <vm>/workload-NAME.jsonl progress records, <vm>/dmesg.txt, the VM's artifacts
    ledger.csv, ledger.json, summary.json, plot.png   (harness.scenario.rebuild)
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from harness.host.placement import GUEST_STREAM

RUN_META = "run.json"
HARNESS_EVENTS = "harness-events.jsonl"
HOST_LEDGER = "ledger-host.jsonl"
FINAL = "final.json"
#: Seconds between flushes of the appended files (and always at close).
FLUSH_EVERY_S = 2.0


class JsonlAppender:
    """Appends JSON lines from any thread; flushes at least every FLUSH_EVERY_S."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = path.open("a")
        self._lock = threading.Lock()
        self._flushed = time.monotonic()

    def write(self, record: dict) -> None:
        line = json.dumps(record, default=str) + "\n"
        with self._lock:
            if self._fh is None:
                return
            self._fh.write(line)
            if time.monotonic() - self._flushed >= FLUSH_EVERY_S:
                self._fh.flush()
                self._flushed = time.monotonic()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def read_jsonl(path: Path) -> list[dict]:
    """Every complete JSON line of `path` (missing file: none; a line cut by a kill: skipped)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, default=str) + "\n" for r in records))


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass
class GuestEvidence:
    name: str
    samples: list[dict] = field(default_factory=list)
    daemon_events: list[dict] = field(default_factory=list)
    final: dict = field(default_factory=dict)
    progress: dict[str, list[dict]] = field(default_factory=dict)
    dmesg: str | None = None


@dataclass
class RunEvidence:
    """Everything a run folder holds, complete or not."""

    folder: Path
    meta: dict
    harness_events: list[dict]
    host_rows: list[dict]
    guests: dict[str, GuestEvidence]

    @property
    def complete(self) -> bool:
        return bool(self.meta.get("finished"))

    @property
    def t0(self) -> float:
        return float(self.meta.get("t0") or min([r["t"] for r in self.host_rows] or [0.0]))

    @property
    def end_s(self) -> float:
        """Seconds from t0 to the end of the workload phase (collection started), or infinity."""
        for event in self.harness_events:
            if event.get("event") == "collect-start":
                return event["t"] - self.t0
        return float("inf")

    def offset(self, vm: str) -> float:
        for event in self.harness_events:
            if event.get("event") == "clock-offset" and event.get("vm") == vm:
                return float(event["guest_minus_host_s"])
        return 0.0


def load_evidence(folder: Path) -> RunEvidence:
    meta = read_json(folder / RUN_META) or {}
    host_rows = read_jsonl(folder / HOST_LEDGER)
    names = list(meta.get("guests") or {}) or sorted({r["vm"] for r in host_rows if r.get("vm") != "host"})
    guests = {}
    for name in names:
        vm_dir = folder / name
        stream = read_jsonl(vm_dir / GUEST_STREAM)
        evidence = GuestEvidence(name)
        evidence.samples = [{k: v for k, v in r.items() if k != "kind"} for r in stream if r.get("kind") == "sample"]
        evidence.daemon_events = [r["record"] for r in stream
                                  if r.get("kind") == "event" and r.get("source") == "intermediate"
                                  and isinstance(r.get("record"), dict)]
        # The copies fetched at the end over SSH are complete where the stream was cut.
        fetched = read_jsonl(vm_dir / "intermediate-events.jsonl")
        if len(fetched) > len(evidence.daemon_events):
            evidence.daemon_events = fetched
        fetched_samples = read_jsonl(vm_dir / "ledger-guest.jsonl")
        if len(fetched_samples) > len(evidence.samples):
            evidence.samples = fetched_samples
        evidence.final = read_json(vm_dir / FINAL) or {}
        for path in sorted(vm_dir.glob("workload-*.jsonl")):
            evidence.progress[path.stem.removeprefix("workload-")] = read_jsonl(path)
        try:
            evidence.dmesg = (vm_dir / "dmesg.txt").read_text(errors="replace")
        except OSError:
            evidence.dmesg = None
        guests[name] = evidence
    return RunEvidence(folder, meta, read_jsonl(folder / HARNESS_EVENTS), host_rows, guests)
