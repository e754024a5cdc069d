"""The guest half of the memory ledger: one JSON line every interval, written inside the
guest so that nothing is lost while the guest is too busy to answer SSH.

    python3 -m harness.guest.sampler --out FILE [--interval 0.5] [--progress NAME=FILE ...]
        [--state-dir DIR] [--port NAME] [--forward SOURCE=FILE ...]

With --port, every sample also goes out at once on the virtio-serial port NAME, which the
host's QEMU writes into the run folder: a run killed on the host, or a guest that stops
answering SSH, keeps every sample up to its last second. --forward sends the new lines of
other guest files (the Intermediate daemon's event log) on the same port, tagged with
SOURCE. Port lines are {"kind": "sample", ...} or {"kind": "event", "source": S, "record": {...}}.

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


def find_port(name: str, sys_dir: str = "/sys/class/virtio-ports", dev_dir: str = "/dev") -> str | None:
    """The device node of the virtio-serial port called `name` (no udev on the lean boot,
    so no /dev/virtio-ports/NAME link: the name is read from sysfs)."""
    try:
        entries = sorted(os.listdir(sys_dir))
    except OSError:
        return None
    for entry in entries:
        try:
            with open(os.path.join(sys_dir, entry, "name")) as fh:
                if fh.read().strip() == name:
                    return os.path.join(dev_dir, entry)
        except OSError:
            continue
    return None


class Follower:
    """The complete lines appended to a file since the last call. A file that is replaced
    or truncated (a restarted daemon starts a fresh log) is followed from its start."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.inode: int | None = None
        self.offset = 0
        self.partial = b""

    def new_lines(self) -> list[bytes]:
        try:
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if st.st_ino != self.inode or st.st_size < self.offset:
                    self.inode, self.offset, self.partial = st.st_ino, 0, b""
                fh.seek(self.offset)
                data = fh.read(1 << 20)  # at most 1 MiB a tick: the rest comes next tick
        except OSError:
            return []
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        return [line for line in lines if line.strip()]


def port_lines(record: dict, followers: dict[str, Follower]) -> bytes:
    """One write's worth for the port: the sample, then the forwarded lines."""
    out = [json.dumps({"kind": "sample", **record})]
    for source, follower in followers.items():
        for raw in follower.new_lines():
            try:
                parsed = json.loads(raw)
            except ValueError:
                continue  # a line cut short by a crash: nothing to forward
            out.append(json.dumps({"kind": "event", "source": source, "record": parsed}))
    return ("\n".join(out) + "\n").encode()


def open_port(name: str) -> int | None:
    path = find_port(name)
    if path is None:
        return None
    try:
        return os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return None


def write_all(fd: int, data: bytes) -> bool:
    try:
        while data:
            data = data[os.write(fd, data):]
        return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m harness.guest.sampler", description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--progress", action="append", default=[], metavar="NAME=FILE")
    parser.add_argument("--state-dir", default=None, help="the Intermediate daemon's state dir")
    parser.add_argument("--port", default=None, help="virtio-serial port name to stream samples to")
    parser.add_argument("--forward", action="append", default=[], metavar="SOURCE=FILE",
                        help="also stream the new lines of FILE on the port, tagged SOURCE")
    args = parser.parse_args(argv)
    progress = dict(item.split("=", 1) for item in args.progress)
    followers = {source: Follower(path) for source, path in (item.split("=", 1) for item in args.forward)}
    port = open_port(args.port) if args.port else None
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
            record = sample(progress, args.state_dir)
            out.write(json.dumps(record) + "\n")
            if port is not None and not write_all(port, port_lines(record, followers)):
                os.close(port)  # the host side went away: keep the local file going
                port = None
            next_at += args.interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the sampling period itself
            else:
                next_at = time.monotonic()  # fell behind (guest stalled): do not burst
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
