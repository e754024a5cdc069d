"""The guest half of the memory ledger: one JSON line every interval, written inside the
guest so that nothing is lost while the guest is too busy to answer SSH.

    python3 -m harness.guest.sampler --out FILE [--interval 0.5] [--progress NAME=FILE ...]
        [--state-dir DIR]

Standard library only. It locks itself in RAM (mlockall) so that its own pages are not
what the kernel reclaims first under the pressure it is measuring.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import time

from harness.guest.intermediate.config import PSI_MEMORY_PATH
from harness.guest.intermediate.pressure import parse_psi, read_small_file
from harness.guest.intermediate.procs import list_pids, read_stat
from harness.guest.intermediate.state import STATE_FILE

MCL_CURRENT, MCL_FUTURE = 1, 2


def read_kv(path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(path) as fh:
            for line in fh:
                parts = line.replace(":", " ").split()
                if len(parts) >= 2 and parts[1].lstrip("-").isdigit():
                    out[parts[0]] = int(parts[1])
    except OSError:
        pass
    return out


def read_psi(path: str = PSI_MEMORY_PATH) -> dict[str, float]:
    """avg10 (%) and total (µs) of the `some` and `full` lines, through the daemon's parser."""
    try:
        snap = parse_psi(read_small_file(path))
    except (OSError, ValueError):
        return {}
    out = {"some_avg10": snap.some.avg10, "some_total": float(snap.some.total)}
    if snap.full is not None:
        out.update(full_avg10=snap.full.avg10, full_total=float(snap.full.total))
    return out


def last_json_line(path: str) -> dict | None:
    """The last complete line of a JSONL file, reading only its tail."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 4096))
            lines = fh.read().splitlines()
    except OSError:
        return None
    for raw in reversed(lines):
        try:
            return json.loads(raw)
        except ValueError:
            continue
    return None


def stopped_user_processes() -> int:
    """Processes in state T (stopped), kernel threads excluded."""
    return sum(1 for pid in list_pids()
               if (stat := read_stat(pid)) is not None and stat.state == "T" and not stat.is_kernel_thread)


def daemon_stopped(state_dir: str | None) -> int | None:
    if not state_dir:
        return None
    try:
        with open(os.path.join(state_dir, STATE_FILE)) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return 0
    records = data.get("stopped", data) if isinstance(data, dict) else data
    return len(records) if isinstance(records, (list, dict)) else None


def sample(progress: dict[str, str], state_dir: str | None) -> dict:
    mem = read_kv("/proc/meminfo")
    vm = read_kv("/proc/vmstat")
    psi = read_psi()
    record = {
        "t": round(time.time(), 3),
        "mem_total_mib": round(mem.get("MemTotal", 0) / 1024, 1),
        "mem_available_mib": round(mem.get("MemAvailable", 0) / 1024, 1),
        "mem_free_mib": round(mem.get("MemFree", 0) / 1024, 1),
        "swap_used_mib": round((mem.get("SwapTotal", 0) - mem.get("SwapFree", 0)) / 1024, 1),
        "psi_some_avg10": psi.get("some_avg10"),
        "psi_some_total_us": psi.get("some_total"),
        "psi_full_avg10": psi.get("full_avg10"),
        "psi_full_total_us": psi.get("full_total"),
        "oom_kill": vm.get("oom_kill"),
        "pswpin": vm.get("pswpin"),
        "pswpout": vm.get("pswpout"),
        "procs_stopped": stopped_user_processes(),
        "daemon_stopped": daemon_stopped(state_dir),
        "progress": {name: last_json_line(path) for name, path in progress.items()},
    }
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m harness.guest.sampler", description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--progress", action="append", default=[], metavar="NAME=FILE")
    parser.add_argument("--state-dir", default=None, help="the Intermediate daemon's state dir")
    args = parser.parse_args(argv)
    progress = dict(item.split("=", 1) for item in args.progress)
    try:
        ctypes.CDLL(None, use_errno=True).mlockall(MCL_CURRENT | MCL_FUTURE)
    except (OSError, AttributeError):
        pass
    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    next_at = time.monotonic()
    with open(args.out, "a", buffering=1) as out:
        while running:
            out.write(json.dumps(sample(progress, args.state_dir)) + "\n")
            next_at += args.interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the sampling period itself
            else:
                next_at = time.monotonic()  # fell behind (guest stalled): do not burst
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
