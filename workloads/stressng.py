#!/usr/bin/env python3
"""Debian's stress-ng under a named profile, reported as the same JSON progress lines."""

from __future__ import annotations

import argparse
import subprocess
import time

from _common import Progress, set_comm

#: profile -> stress-ng arguments; {size_mib} and {seconds} are filled in.
PROFILES = {
    # Anonymous memory kept resident and re-touched (the classic overcommit hog).
    "vm-hog": ["--vm", "1", "--vm-bytes", "{size_mib}M", "--vm-keep", "--vm-method", "all",
               "--timeout", "{seconds}s"],
    # Many small allocations and frees (malloc churn).
    "malloc": ["--malloc", "2", "--malloc-bytes", "{size_mib}M", "--timeout", "{seconds}s"],
    # Page-cache pressure from file writes.
    "hdd": ["--hdd", "1", "--hdd-bytes", "{size_mib}M", "--timeout", "{seconds}s"],
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--name", default="bh-stressng")
    p.add_argument("--profile", choices=sorted(PROFILES), default="vm-hog")
    p.add_argument("--size-mib", type=int, default=256)
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--progress", default=None)
    args = p.parse_args()
    set_comm(args.name)
    out = Progress(args.progress, name=args.name)
    argv = ["stress-ng", *[a.format(size_mib=args.size_mib, seconds=args.seconds) for a in PROFILES[args.profile]],
            "--metrics-brief"]
    out.emit("start", profile=args.profile, argv=argv)
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while proc.poll() is None:
        try:
            proc.wait(1.0)
        except subprocess.TimeoutExpired:
            out.emit("progress", seconds=round(time.monotonic() - started, 1))
    output = proc.stdout.read() if proc.stdout else ""
    metrics = [line.split("] ", 1)[-1] for line in output.splitlines() if "metrc" in line or "bogo" in line]
    event = "done" if proc.returncode == 0 else "failed"
    out.emit(event, exit_status=proc.returncode, seconds=round(time.monotonic() - started, 2),
             metrics=metrics[-4:])
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
