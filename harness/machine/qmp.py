"""QMP as a plain, thread-safe object on top of `qemu.qmp`.

The asyncio client runs on its own event-loop thread, so the test thread, the memory
ledger's sampler and the balloon ramp can all talk to the same VM. Every message in both
directions is appended to a traffic log (JSON lines), kept as a test artifact.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from qemu.qmp import ExecuteError, QMPClient
from qemu.qmp.message import Message

from harness.errors import HarnessError

# qemu.qmp logs a failed handshake at ERROR when QEMU exits early; the harness reports that
# itself, with the command line, and keeps the full traffic in its own log.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


class QmpError(HarnessError):
    """A QMP command failed or QMP is not reachable."""


class _LoggingClient(QMPClient):
    def __init__(self, name: str, log: Callable[[str, Any], None]) -> None:
        super().__init__(name)
        self._log = log

    def _cb_outbound(self, msg: Message) -> Message:
        self._log("out", msg)
        return super()._cb_outbound(msg)

    def _cb_inbound(self, msg: Message) -> Message:
        self._log("in", msg)
        return super()._cb_inbound(msg)


class QmpConnection:
    def __init__(self, name: str, socket_path: Path, traffic_log: Path) -> None:
        self.name = name
        self.socket_path = socket_path
        self.traffic_log = traffic_log
        self._log_lock = threading.Lock()
        self._log_file = traffic_log.open("a", buffering=1)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"qmp-{name}",
                                        daemon=True)
        self._thread.start()
        self._client = _LoggingClient(name, self._record)
        self._events: list[dict] = []
        self._events_cond = threading.Condition()
        self._closed = False
        self._events_task = None

    # -- plumbing -----------------------------------------------------------------------
    def _record(self, direction: str, msg: Any) -> None:
        try:
            payload = dict(msg)
        except (TypeError, ValueError):
            payload = str(msg)
        line = json.dumps({"t": round(time.time(), 3), "dir": direction, "msg": payload},
                          default=str)
        with self._log_lock:
            if not self._log_file.closed:
                self._log_file.write(line + "\n")

    def _call(self, coro, timeout: float):
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise QmpError(f"QMP to {self.name} did not answer within {timeout:.0f} s.") from None

    async def _collect_events(self) -> None:
        async for event in self._client.events:
            with self._events_cond:
                self._events.append({"t": time.time(), **dict(event)})
                self._events_cond.notify_all()

    # -- lifecycle ----------------------------------------------------------------------
    def listen(self) -> None:
        """Bind the socket before QEMU starts, so QEMU connects to us: no connect race."""
        self._call(self._client.start_server(str(self.socket_path)), 10)

    def accept(self, timeout: float, alive: Callable[[], bool] = lambda: True) -> None:
        """Wait for QEMU to connect. `alive` is polled so that a QEMU that exits early ends
        the wait at once instead of at the deadline."""
        future = asyncio.run_coroutine_threadsafe(self._client.accept(), self._loop)
        deadline = time.monotonic() + timeout
        while True:
            try:
                future.result(0.1)
                break
            except FutureTimeout:
                if not alive() or time.monotonic() > deadline:
                    future.cancel()
                    raise QmpError(f"QEMU ({self.name}) did not connect to QMP.") from None
            except Exception as exc:
                raise QmpError(f"QMP handshake with {self.name} failed: {exc}") from None
        self._events_task = asyncio.run_coroutine_threadsafe(self._collect_events(), self._loop)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._events_task is not None:
            self._events_task.cancel()
        try:
            self._call(self._client.disconnect(), 5)
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        with self._log_lock:
            self._log_file.close()

    # -- commands and events ------------------------------------------------------------
    def execute(self, command: str, arguments: dict | None = None, timeout: float = 30.0) -> Any:
        if self._closed:
            raise QmpError(f"QMP to {self.name} is closed.")
        try:
            return self._call(self._client.execute(command, arguments), timeout)
        except ExecuteError as exc:
            # exc.error is the ErrorResponse; its .error holds class and desc.
            raise QmpError(f"QMP {command} failed on {self.name}: {exc.error_class}: "
                           f"{exc.error.error.desc}") from None
        except (ConnectionError, EOFError, OSError) as exc:
            raise QmpError(f"QMP {command} on {self.name}: connection lost ({exc}).") from None
        except QmpError:
            raise
        except Exception as exc:  # qemu.qmp wraps transport failures in its own types
            raise QmpError(f"QMP {command} on {self.name} failed: {exc!r}") from None

    def hmp(self, command_line: str, timeout: float = 30.0) -> str:
        return str(self.execute("human-monitor-command", {"command-line": command_line},
                                timeout))

    def events(self, name: str | None = None, since: float = 0.0) -> list[dict]:
        with self._events_cond:
            return [e for e in self._events
                    if (name is None or e.get("event") == name) and e["t"] >= since]

    def wait_event(self, name: str, timeout: float, since: float = 0.0) -> dict | None:
        deadline = time.monotonic() + timeout
        with self._events_cond:
            while True:
                for event in self._events:
                    if event.get("event") == name and event["t"] >= since:
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._events_cond.wait(left)
