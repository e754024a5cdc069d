#!/usr/bin/env python3
"""The workload the memory serves: a parent, worker children and pipes between them.

The parent hands out work items over a pipe to each worker and collects results over
another; a worker's item is one pass over its own working set (every page read and
written), so its throughput falls as soon as those pages have to come back from swap.
Children are forks of the parent (same executable, same cgroup: "similar") connected by
pipes ("dependent"): what the Intermediate module must keep running together.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import time

from _common import Progress, set_comm

PAGE = 4096


def worker(index: int, name: str, working_set_mib: int, inbox: int, outbox: int) -> None:
    set_comm(f"{name}-w{index}"[:15])
    data = bytearray(working_set_mib << 20)
    with os.fdopen(inbox, "rb", buffering=0) as rx, os.fdopen(outbox, "wb", buffering=0) as tx:
        while True:
            msg = rx.read(8)
            if len(msg) < 8:
                return
            seq = int.from_bytes(msg, "little")
            mark = bytes([seq & 0xFF or 1]) * (len(data) // PAGE)
            data[::PAGE] = mark  # touch every page of the working set
            checksum = sum(data[PAGE // 2::PAGE * 64])  # and read some back
            tx.write(seq.to_bytes(8, "little") + checksum.to_bytes(8, "little"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--name", default="bh-protected")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--working-set-mib", type=int, default=64, help="per worker")
    p.add_argument("--parent-mib", type=int, default=16, help="the parent's own buffer")
    p.add_argument("--duration-s", type=float, default=60.0)
    p.add_argument("--progress", default=None)
    args = p.parse_args()
    set_comm(args.name)
    out = Progress(args.progress, name=args.name)

    children: dict[int, tuple[int, int]] = {}  # pid -> (write fd to worker, read fd from worker)
    for index in range(args.workers):
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(to_child_w)
            os.close(from_child_r)
            try:
                worker(index, args.name, args.working_set_mib, to_child_r, from_child_w)
            finally:
                os._exit(0)
        os.close(to_child_r)
        os.close(from_child_w)
        children[pid] = (to_child_w, from_child_r)
    parent_buf = bytearray(args.parent_mib << 20)
    out.emit("start", workers=args.workers, working_set_mib=args.working_set_mib,
             duration_s=args.duration_s, worker_pids=sorted(children))

    seq = 0
    done = 0
    lost: list[int] = []
    started = time.monotonic()
    last_report, done_at_report = started, 0
    for wfd, _ in children.values():  # one item in flight per worker
        seq += 1
        os.write(wfd, seq.to_bytes(8, "little"))
    readers = {rfd: (pid, wfd) for pid, (wfd, rfd) in children.items()}
    while readers and time.monotonic() - started < args.duration_s:
        ready, _, _ = select.select(list(readers), [], [], 1.0)
        for rfd in ready:
            pid, wfd = readers[rfd]
            reply = os.read(rfd, 16)
            if len(reply) < 16:  # the worker died (OOM-killed, say)
                lost.append(pid)
                del readers[rfd]
                out.emit("worker-died", worker_pid=pid)
                continue
            done += 1
            parent_buf[::PAGE] = bytes([done & 0xFF or 1]) * (len(parent_buf) // PAGE)
            seq += 1
            os.write(wfd, seq.to_bytes(8, "little"))
        now = time.monotonic()
        if now - last_report >= 1.0:
            out.emit("progress", items=done, items_per_s=round((done - done_at_report) / (now - last_report), 2))
            last_report, done_at_report = now, done
    elapsed = time.monotonic() - started
    for wfd, rfd in children.values():
        for fd in (wfd, rfd):
            try:
                os.close(fd)
            except OSError:
                pass
    for pid in children:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    if lost:
        out.emit("failed", items=done, seconds=round(elapsed, 2), lost_workers=lost)
        return 1
    out.emit("done", items=done, seconds=round(elapsed, 2), items_per_s=round(done / elapsed, 3))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    raise SystemExit(main())
