"""The memory ledger: one time-aligned record per ~0.5 s of a run.

Two samplers feed it. On the host, a thread reads what QEMU knows even when the guest is
too busy to answer (QEMU's RSS, the balloon target and `actual`, virtio-balloon guest
stats). In the guest, `harness.guest.sampler` writes what only the guest knows (MemTotal,
MemAvailable, swap, PSI, oom_kill, stopped processes, workload progress) to a file that is
fetched afterwards. Guest time is mapped onto host time by a measured clock offset.
"""

from __future__ import annotations

import csv
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.balloon import BalloonController
from harness.guestcode import GUEST_DATA, read_guest_jsonl
from harness.machine.base import Machine
from harness.machine.qmp import QmpError
from harness.ssh import CONTROL_ENV

GUEST_LEDGER = f"{GUEST_DATA}/ledger-guest.jsonl"
SAMPLER_UNIT = "bh-sampler.service"

# RSS split: anon is QEMU's own memory; file is pages of a RAM image that guests restored
# from one saved state share (see README "Fast VMs": how shared pages are charged).
HOST_FIELDS = ["host_qemu_rss_mib", "host_qemu_anon_mib", "host_qemu_file_mib", "balloon_target_mib", "balloon_actual_mib",
               "stats_total_mib", "stats_available_mib"]
GUEST_FIELDS = ["guest_mem_total_mib", "guest_mem_available_mib", "guest_swap_used_mib",
                "psi_some_avg10", "psi_some_total_us", "psi_full_avg10", "psi_full_total_us",
                "oom_kill", "daemon_stopped", "procs_stopped"]


class HostSampler:
    """Samples the host side every `interval` seconds on a background thread."""

    def __init__(self, machine: Machine, controller: BalloonController, interval: float = 0.5) -> None:
        self.machine = machine
        self.controller = controller
        self.interval = interval
        self.records: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"ledger-{machine.name}", daemon=True)
        self._target: float | None = None

    def note_target(self, mib: float) -> None:
        self._target = mib

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            memory = self.machine.process_memory()
            record: dict = {"t": time.time(), "host_qemu_rss_mib": self.machine.host_rss_mib(),
                            "host_qemu_anon_mib": _round(memory and memory.rss_anon_mib),
                            "host_qemu_file_mib": _round(memory and memory.rss_file_mib),
                            "balloon_target_mib": self._target}
            try:
                record["balloon_actual_mib"] = round(self.machine.balloon.state().actual_mib, 1)
                stats = self.machine.balloon.guest_stats()
                record["stats_total_mib"] = _round(stats.total_mib)
                record["stats_available_mib"] = _round(stats.available_mib)
            except QmpError:
                pass  # QEMU gone: the run is ending; the gap in the ledger says so
            self.records.append(record)
            self._stop.wait(self.interval)  # the sampling period


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def start_guest_sampler(machine: Machine, progress: dict[str, str], state_dir: str | None,
                        interval: float = 0.5) -> None:
    args = ["--out", GUEST_LEDGER, "--interval", str(interval)]
    for name, path in progress.items():
        args += ["--progress", f"{name}={path}"]
    if state_dir:
        args += ["--state-dir", state_dir]
    # -E marks it as the harness's own (never stopped by the daemon); -1000 keeps the OOM
    # killer away from the instrument that records the OOM killer.
    machine.ssh.run(f"rm -f {GUEST_LEDGER}; systemctl stop {SAMPLER_UNIT} 2>/dev/null; "
                    f"systemctl reset-failed {SAMPLER_UNIT} 2>/dev/null; "
                    f"systemd-run --quiet --unit={SAMPLER_UNIT} -p OOMScoreAdjust=-1000 "
                    f"-E {CONTROL_ENV} -E PYTHONPATH=/opt/balloon-harness "
                    f"python3 -m harness.guest.sampler " + " ".join(args))


def stop_guest_sampler(machine: Machine, timeout: float | None = None) -> list[dict]:
    machine.ssh.run(f"systemctl stop {SAMPLER_UNIT}", timeout=timeout, check=False)
    return read_guest_jsonl(machine, GUEST_LEDGER, timeout)


def measure_clock_offset(machine: Machine, tries: int = 3) -> float:
    """guest_time - host_time, from the round trip with the smallest latency."""
    best: tuple[float, float] | None = None
    for _ in range(tries):
        sent = time.time()
        guest = float(machine.ssh.run("date +%s.%N").stdout)
        back = time.time()
        if best is None or back - sent < best[0]:
            best = (back - sent, guest - (sent + back) / 2)
    assert best is not None
    return best[1]


@dataclass
class Ledger:
    t0: float
    rows: list[dict] = field(default_factory=list)
    workload_names: list[str] = field(default_factory=list)

    @classmethod
    def merge(cls, t0: float, host: list[dict], guest: list[dict], offset: float,
              workload_names: list[str]) -> Ledger:
        """One row per host sample; the guest sample nearest in time (within 0.75 s) joins it.
        A row without guest fields is a moment the guest could not even write a sample."""
        guest = sorted(guest, key=lambda g: g["t"])
        gtimes = [g["t"] - offset for g in guest]
        rows = []
        j = 0
        for h in host:
            row = {"t_s": round(h["t"] - t0, 2), **{k: h.get(k) for k in HOST_FIELDS}}
            while j + 1 < len(gtimes) and abs(gtimes[j + 1] - h["t"]) <= abs(gtimes[j] - h["t"]):
                j += 1
            g = guest[j] if guest and abs(gtimes[j] - h["t"]) <= 0.75 else None
            if g:
                row.update({"guest_mem_total_mib": g.get("mem_total_mib"),
                            "guest_mem_available_mib": g.get("mem_available_mib"),
                            "guest_swap_used_mib": g.get("swap_used_mib"),
                            **{k: g.get(k) for k in GUEST_FIELDS if k in g}})
                for name in workload_names:
                    row[f"progress_{name}"] = _progress_value((g.get("progress") or {}).get(name))
            rows.append(row)
        return cls(t0, rows, workload_names)

    @property
    def columns(self) -> list[str]:
        return ["t_s", *HOST_FIELDS, *GUEST_FIELDS, *[f"progress_{n}" for n in self.workload_names]]

    def write(self, folder: Path) -> tuple[Path, Path]:
        csv_path, json_path = folder / "ledger.csv", folder / "ledger.json"
        with csv_path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in self.columns})
        json_path.write_text(json.dumps({"t0": self.t0, "columns": self.columns, "rows": self.rows}) + "\n")
        return csv_path, json_path

    def series(self, column: str) -> tuple[list[float], list[float]]:
        xs, ys = [], []
        for row in self.rows:
            value = row.get(column)
            if value is not None:
                xs.append(row["t_s"])
                ys.append(float(value))
        return xs, ys


def _progress_value(record: dict | None) -> float | None:
    """One number per workload for the ledger: items done, else MiB allocated, else seconds."""
    if not record:
        return None
    for key in ("items", "allocated_mib", "seconds"):
        if key in record:
            return record[key]
    return None
