"""The memory ledger: one time-aligned record per guest (and one for the host) every ~0.5 s.

Two samplers feed it, and both write as the run goes, so a killed run keeps its ledger:

* on the host, the scenario's monitor (harness.scenario.monitor) appends what the host knows
  even when a guest is too busy to answer: each QEMU's RSS and host swap (VmSwap), the
  balloon target and `actual`, the balloon's guest statistics, and host-wide the budget
  cgroup's usage, peak, page cache, swap, limit hits and OOM kills (`ledger-host.jsonl`);
* in each guest, `harness.guest.sampler` writes what only the guest knows (MemTotal,
  MemAvailable, swap, PSI, oom_kill, stopped processes, workload progress) and streams it
  over a virtio-serial port that QEMU writes into the run folder (`<vm>/guest-stream.jsonl`).

`Ledger.merge` joins them (guest time mapped onto host time by a measured clock offset)
into rows of one table, long format: a `vm` column names the guest, or `host`.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.guestcode import GUEST_DATA, read_guest_jsonl
from harness.host.placement import GUEST_PORT_NAME
from harness.machine.base import Machine
from harness.ssh import CONTROL_ENV

GUEST_LEDGER = f"{GUEST_DATA}/ledger-guest.jsonl"
SAMPLER_UNIT = "bh-sampler.service"
HOST_ROW = "host"

#: Per guest, from the host side. QEMU's RSS splits into anon (its own memory) and file
#: (pages of a RAM image that guests restored from one saved state share: README "Fast VMs").
VM_FIELDS = ["qemu_rss_mib", "qemu_anon_mib", "qemu_file_mib", "qemu_swap_mib", "balloon_target_mib",
             "balloon_actual_mib", "stats_total_mib", "stats_free_mib", "stats_available_mib",
             "stats_swapped_out_mib"]
#: Per guest, from inside it (sampler key -> ledger column).
GUEST_KEYS = {"mem_total_mib": "guest_mem_total_mib", "mem_available_mib": "guest_mem_available_mib",
              "mem_free_mib": "guest_mem_free_mib", "swap_used_mib": "guest_swap_used_mib",
              "psi_some_avg10": "psi_some_avg10", "psi_some_total_us": "psi_some_total_us",
              "psi_full_avg10": "psi_full_avg10", "psi_full_total_us": "psi_full_total_us",
              "oom_kill": "oom_kill", "daemon_stopped": "daemon_stopped", "procs_stopped": "procs_stopped"}
GUEST_FIELDS = list(GUEST_KEYS.values())
#: Host-wide (vm = "host").
HOST_FIELDS = ["budget_mib", "budget_usage_mib", "budget_peak_mib", "budget_file_mib", "budget_swap_mib",
               "host_swap_used_mib", "host_free_share", "host_oom_kills", "budget_limit_hits", "qemu_alive"]


def start_guest_sampler(machine: Machine, progress: dict[str, str], state_dir: str | None,
                        forward: dict[str, str] | None = None, interval: float = 0.5) -> None:
    args = ["--out", GUEST_LEDGER, "--interval", str(interval), "--port", GUEST_PORT_NAME]
    for name, path in progress.items():
        args += ["--progress", f"{name}={path}"]
    for source, path in (forward or {}).items():
        args += ["--forward", f"{source}={path}"]
    if state_dir:
        args += ["--state-dir", state_dir]
    # virtio_console: the lean boot has no udev to load it for the evidence port.
    # -E marks it as the harness's own (never stopped by the daemon); -1000 keeps the OOM
    # killer away from the instrument that records the OOM killer.
    machine.ssh.run(f"modprobe virtio_console 2>/dev/null; rm -f {GUEST_LEDGER}; "
                    f"systemctl stop {SAMPLER_UNIT} 2>/dev/null; "
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
class GuestTrack:
    """One guest's inputs to the ledger."""

    name: str
    host: list[dict]
    samples: list[dict]
    offset_s: float
    workloads: list[str] = field(default_factory=list)


@dataclass
class Ledger:
    t0: float
    rows: list[dict] = field(default_factory=list)
    #: vm name -> its workloads (their progress columns).
    workloads: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def merge(cls, t0: float, host_rows: list[dict], guests: list[GuestTrack]) -> Ledger:
        """One row per host sample of a guest; that guest's sample nearest in time (within
        0.75 s) joins it. A guest row without guest fields is a moment the guest could not
        even write a sample (or its stream was lost)."""
        rows = [{"t_s": round(h["t"] - t0, 2), "vm": HOST_ROW, **{k: h.get(k) for k in HOST_FIELDS}}
                for h in host_rows]
        for track in guests:
            guest = sorted(track.samples, key=lambda g: g["t"])
            gtimes = [g["t"] - track.offset_s for g in guest]
            j = 0
            for h in sorted(track.host, key=lambda r: r["t"]):
                row = {"t_s": round(h["t"] - t0, 2), "vm": track.name, **{k: h.get(k) for k in VM_FIELDS}}
                while j + 1 < len(gtimes) and abs(gtimes[j + 1] - h["t"]) <= abs(gtimes[j] - h["t"]):
                    j += 1
                g = guest[j] if guest and abs(gtimes[j] - h["t"]) <= 0.75 else None
                if g:
                    row.update({column: g.get(key) for key, column in GUEST_KEYS.items()})
                    for name in track.workloads:
                        row[f"progress_{name}"] = _progress_value((g.get("progress") or {}).get(name))
                rows.append(row)
        rows.sort(key=lambda r: (r["t_s"], r["vm"] != HOST_ROW, r["vm"]))
        return cls(t0, rows, {t.name: list(t.workloads) for t in guests})

    @property
    def vms(self) -> list[str]:
        return list(self.workloads)

    @property
    def columns(self) -> list[str]:
        progress = [f"progress_{n}" for names in self.workloads.values() for n in names]
        return ["t_s", "vm", *HOST_FIELDS, *VM_FIELDS, *GUEST_FIELDS, *progress]

    def write(self, folder: Path) -> tuple[Path, Path]:
        csv_path, json_path = folder / "ledger.csv", folder / "ledger.json"
        with csv_path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in self.columns})
        json_path.write_text(json.dumps({"t0": self.t0, "columns": self.columns, "workloads": self.workloads,
                                         "rows": self.rows}) + "\n")
        return csv_path, json_path

    def series(self, column: str, vm: str = HOST_ROW) -> tuple[list[float], list[float]]:
        xs, ys = [], []
        for row in self.rows:
            if row["vm"] != vm:
                continue
            value = row.get(column)
            if value is not None:
                xs.append(row["t_s"])
                ys.append(float(value))
        return xs, ys


def _progress_value(record: dict | None) -> float | None:
    """One number per workload for the ledger: items done, else MiB allocated, else seconds."""
    if not record:
        return None
    for key in PROGRESS_UNITS:
        if key in record:
            return record[key]
    return None


#: What a workload's progress number counts, by the key it reports.
PROGRESS_UNITS = {"items": "items", "allocated_mib": "MiB", "seconds": "s"}


def progress_unit(records: list[dict]) -> str | None:
    for record in reversed(records):
        for key, unit in PROGRESS_UNITS.items():
            if key in record:
                return unit
    return None
