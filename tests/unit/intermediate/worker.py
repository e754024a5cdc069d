"""A configurable process for the Intermediate daemon tests (run as a script, stdlib only).

It sets its comm, optionally allocates and touches memory, counts progress in a file, listens on
or connects to unix sockets, spawns a child, records received SIGCONTs, then just lives until it
is killed.  Whatever fds it was given (pass_fds) it simply keeps open.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time


def set_comm(name: str) -> None:
    with open("/proc/self/comm", "w") as handle:
        handle.write(name[:15])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name")
    parser.add_argument("--counter")
    parser.add_argument("--rss-mb", type=int, default=0)
    parser.add_argument("--ready")
    parser.add_argument("--listen")
    parser.add_argument("--no-accept", action="store_true", help="leave clients queued on --listen (never accept)")
    parser.add_argument("--connect")
    parser.add_argument("--child", help="JSON argv (interpreter included) of a child to spawn")
    parser.add_argument("--signal-log")
    args = parser.parse_args()

    if args.name:
        set_comm(args.name)
    if args.signal_log:
        log_path = args.signal_log

        def on_cont(_signum: int, _frame: object) -> None:
            with open(log_path, "a") as handle:
                handle.write("CONT\n")

        signal.signal(signal.SIGCONT, on_cont)

    ballast = bytearray(args.rss_mb * 1024 * 1024)
    for offset in range(0, len(ballast), 4096):  # touch every page so it is resident
        ballast[offset] = 1

    held: list[socket.socket] = []
    listener = None
    if args.listen:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(args.listen)
        listener.listen(4)
        listener.settimeout(0.02)
        if args.no_accept:
            held.append(listener)
            listener = None
    if args.connect:
        deadline = time.monotonic() + 10
        while True:
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                client.connect(args.connect)
                held.append(client)
                break
            except OSError:
                client.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    child = None
    if args.child:
        child = subprocess.Popen(json.loads(args.child), close_fds=True)

    # The counter exists (with 0) before the ready file: a reader never finds it missing.
    counter_fd = os.open(args.counter, os.O_WRONLY | os.O_CREAT, 0o644) if args.counter else None
    count = 0
    if counter_fd is not None:
        os.pwrite(counter_fd, f"{count:012d}\n".encode(), 0)

    if args.ready:
        with open(args.ready + ".tmp", "w") as handle:
            handle.write(str(os.getpid()))
        os.replace(args.ready + ".tmp", args.ready)

    while True:
        if listener is not None:
            try:
                conn, _ = listener.accept()
                held.append(conn)
            except (TimeoutError, BlockingIOError):
                pass
        else:
            time.sleep(0.02)
        if counter_fd is not None:
            count += 1
            os.pwrite(counter_fd, f"{count:012d}\n".encode(), 0)
        if child is not None and child.poll() is not None:
            child = None
    return 0


if __name__ == "__main__":
    sys.exit(main())
