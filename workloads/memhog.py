#!/usr/bin/env python3
"""A memory hog with a hot working set: allocate, keep touching every page, hold, exit."""

from __future__ import annotations

import argparse
import time

from _common import Progress, set_comm

PAGE = 4096
CHUNK_MIB = 4


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--name", default="bh-memhog")
    p.add_argument("--size-mib", type=int, required=True)
    p.add_argument("--rate-mib-s", type=float, default=100.0, help="allocation rate")
    p.add_argument("--hold-s", type=float, default=60.0, help="how long to keep touching after reaching size")
    p.add_argument("--pause-s", type=float, default=0.05, help="pause between passes over the pages")
    p.add_argument("--progress", default=None, help="append JSON progress lines to this file")
    args = p.parse_args()
    set_comm(args.name)
    out = Progress(args.progress, name=args.name)
    out.emit("start", size_mib=args.size_mib, rate_mib_s=args.rate_mib_s, hold_s=args.hold_s)

    chunks: list[bytearray] = []
    started = time.monotonic()
    full_at: float | None = None
    passes = 0
    touched_pages = 0
    last_report = started
    while True:
        now = time.monotonic()
        want = min(args.size_mib, int((now - started) * args.rate_mib_s) + CHUNK_MIB)
        while len(chunks) * CHUNK_MIB < want:
            chunks.append(bytearray(CHUNK_MIB << 20))
        if full_at is None and len(chunks) * CHUNK_MIB >= args.size_mib:
            full_at = now
            out.emit("full", allocated_mib=len(chunks) * CHUNK_MIB, seconds=round(now - started, 2))
        # One write per page (a strided slice assignment, done in C) keeps the whole
        # allocation in the working set: these pages are never idle enough to reclaim cheaply.
        mark = bytes([passes & 0xFF or 1]) * ((CHUNK_MIB << 20) // PAGE)
        for chunk in chunks:
            chunk[::PAGE] = mark
            touched_pages += len(mark)
        passes += 1
        time.sleep(args.pause_s)  # the pass rate, not a wait for anything
        now = time.monotonic()
        if now - last_report >= 1.0:
            out.emit("progress", allocated_mib=len(chunks) * CHUNK_MIB, passes=passes,
                     pages_per_s=round(touched_pages / (now - last_report)))
            touched_pages = 0
            last_report = now
        if full_at is not None and now - full_at >= args.hold_s:
            out.emit("done", allocated_mib=len(chunks) * CHUNK_MIB, passes=passes,
                     seconds=round(now - started, 2))
            return 0


if __name__ == "__main__":
    raise SystemExit(main())
