"""A writer of fake /proc/pressure/memory files, for the tests and the benchmark.

`total` (cumulative stall µs) always advances at the stall percentage that was set, so the fast
signal the daemon derives from it is consistent with what is written.  avg10 either equals the
current percentage (`steady`, the default: tests stay fast) or follows the kernel's lagging
exponential 10 s average (`kernel`: realistic reaction-time measurements).
"""

from __future__ import annotations

import math
import os
import threading
import time

AVG_STEADY = "steady"
AVG_KERNEL = "kernel"


class PressureFileWriter:
    def __init__(self, path: str, *, interval: float = 0.02, avg_model: str = AVG_STEADY) -> None:
        if avg_model not in (AVG_STEADY, AVG_KERNEL):
            raise ValueError(f"unknown avg model {avg_model!r}")
        self.path = path
        self.interval = interval
        self.avg_model = avg_model
        self._lock = threading.Lock()
        self._some_percent = 0.0
        self._full_percent = 0.0
        self._avg10_override: float | None = None
        self._some_total = 0.0
        self._full_total = 0.0
        self._some_avg = [0.0, 0.0, 0.0]  # avg10, avg60, avg300
        self._full_avg = [0.0, 0.0, 0.0]
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.set_changed_at = self._last
        self._write()

    # -- control -----------------------------------------------------------------------------
    def set(self, some_percent: float, *, full_percent: float = 0.0, avg10: float | None = None) -> float:
        """Stall `some_percent` % from now on; returns the time.monotonic() of the change.

        `avg10` pins the written some avg10 to a value (to test the lag rule); None follows
        the model.
        """
        with self._lock:
            self._advance(time.monotonic())
            self._some_percent = float(some_percent)
            self._full_percent = float(full_percent)
            self._avg10_override = avg10
            self._write()
            self.set_changed_at = time.monotonic()
            return self.set_changed_at

    def start(self) -> PressureFileWriter:
        self._thread = threading.Thread(target=self._run, name="psi-writer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def __enter__(self) -> PressureFileWriter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                self._advance(time.monotonic())
                self._write()

    def _advance(self, now: float) -> None:
        dt = max(0.0, now - self._last)
        self._last = now
        self._some_total += self._some_percent / 100.0 * dt * 1e6
        self._full_total += self._full_percent / 100.0 * dt * 1e6
        for avgs, pct in ((self._some_avg, self._some_percent), (self._full_avg, self._full_percent)):
            for i, horizon in enumerate((10.0, 60.0, 300.0)):
                if self.avg_model == AVG_STEADY:
                    avgs[i] = pct
                else:
                    avgs[i] += (pct - avgs[i]) * (1.0 - math.exp(-dt / horizon))

    def _write(self) -> None:
        some10 = self._avg10_override if self._avg10_override is not None else self._some_avg[0]
        text = (
            f"some avg10={some10:.2f} avg60={self._some_avg[1]:.2f} "
            f"avg300={self._some_avg[2]:.2f} total={int(self._some_total)}\n"
            f"full avg10={self._full_avg[0]:.2f} avg60={self._full_avg[1]:.2f} "
            f"avg300={self._full_avg[2]:.2f} total={int(self._full_total)}\n"
        )
        tmp = f"{self.path}.tmp"
        with open(tmp, "w", encoding="ascii") as handle:
            handle.write(text)
        # Atomic replace so the daemon never reads a half-written file.
        os.replace(tmp, self.path)
