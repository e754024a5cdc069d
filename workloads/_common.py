"""Shared by the guest workloads: JSON progress lines and the process name."""

from __future__ import annotations

import ctypes
import json
import os
import time

PR_SET_NAME = 15


def set_comm(name: str) -> None:
    """Name this process (what ps, /proc/PID/comm and OOM-killer messages show)."""
    try:
        ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Progress:
    """Appends one JSON object per line and flushes, so a reader sees whole lines only."""

    def __init__(self, path: str | None, **common) -> None:
        self.fh = open(path, "a", buffering=1) if path else None
        self.common = {"pid": os.getpid(), **common}

    def emit(self, event: str, **fields) -> None:
        line = json.dumps({"t": round(time.time(), 3), "event": event, **self.common, **fields})
        if self.fh:
            self.fh.write(line + "\n")
        else:
            print(line, flush=True)
