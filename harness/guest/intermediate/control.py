"""Control socket: a unix stream socket answering one JSON request line with one JSON line.

Served by its own thread, which never touches a decision: the handler reads an immutable
snapshot of the daemon's state (and, for `status`, classifies on its own). Clients are
non-blocking connections with their own buffers, so no client -- idle, slow or many -- can
hold up the daemon's loop (issue 11: twelve idle clients delayed the first stop by 5 s when
the loop served each with a blocking 0.5 s recv).
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import socket
import stat
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024
IDLE_TIMEOUT = 30.0  # a client that sends no complete line for this long is dropped
MAX_CLIENTS = 64  # beyond this, the longest-idle client is dropped for a new one
SEND_TIMEOUT = 2.0  # the answer is small; a client that does not read it is dropped


class ControlError(Exception):
    pass


def _remove_stale_socket(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlError(f"control path {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: left over from a dead daemon
        return
    finally:
        probe.close()
    raise ControlError(f"control socket {path} is in use by a running daemon")


class ControlServer:
    def __init__(self, path: str, handler: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.path = path
        self.handler = handler
        _remove_stale_socket(path)
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        self._sock.bind(path)
        os.chmod(path, 0o600)
        self._sock.listen(MAX_CLIENTS)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._clients: dict[socket.socket, tuple[bytearray, float]] = {}  # conn -> (buffer, last activity)
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def client_count(self) -> int:
        return len(self._clients)

    # -- the serving thread ----------------------------------------------------------------------
    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select(timeout=1.0):
                    if key.fileobj == self._wake_r:
                        for conn in list(self._clients):
                            self._drop(selector, conn)
                        return
                    if key.fileobj is self._sock:
                        self._accept(selector)
                    else:
                        self._receive(selector, key.fileobj)  # type: ignore[arg-type]
                now = time.monotonic()
                for conn, (_, last) in list(self._clients.items()):
                    if now - last > IDLE_TIMEOUT:
                        self._drop(selector, conn)

    def _accept(self, selector: selectors.BaseSelector) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: try again on the next wake-up
                log.warning("control socket: accept failed: %s", exc)
                return
            if len(self._clients) >= MAX_CLIENTS:
                oldest = min(self._clients, key=lambda c: self._clients[c][1])
                self._drop(selector, oldest)
            conn.setblocking(False)
            self._clients[conn] = (bytearray(), time.monotonic())
            selector.register(conn, selectors.EVENT_READ)

    def _receive(self, selector: selectors.BaseSelector, conn: socket.socket) -> None:
        buf, _ = self._clients[conn]
        try:
            chunk = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(selector, conn)
            return
        buf += chunk
        self._clients[conn] = (buf, time.monotonic())
        if chunk and b"\n" not in buf and len(buf) < MAX_REQUEST:
            return  # not a whole line yet
        selector.unregister(conn)
        del self._clients[conn]
        try:
            conn.setblocking(True)
            conn.settimeout(SEND_TIMEOUT)
            conn.sendall(json.dumps(self._answer(bytes(buf)), default=str).encode() + b"\n")
        except OSError as exc:
            log.debug("control client dropped: %s", exc)
        finally:
            conn.close()

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line.decode() or "{}")
            if not isinstance(request, dict):
                raise ValueError("request must be a JSON object")
            return self.handler(request)
        except ValueError as exc:
            return {"error": f"bad request: {exc}"}
        except Exception as exc:  # never let a client take the daemon down
            log.exception("control request failed")
            return {"error": f"{type(exc).__name__}: {exc}"}

    def _drop(self, selector: selectors.BaseSelector, conn: socket.socket) -> None:
        self._clients.pop(conn, None)
        try:
            selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()

    def close(self) -> None:
        if self._thread.is_alive():
            os.write(self._wake_w, b"x")
            self._thread.join(timeout=5)
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def request(path: str, command: str = "status", timeout: float = 5.0) -> dict[str, Any]:
    """Send one command to a daemon's control socket and return its JSON answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except OSError as exc:
            raise ControlError(f"cannot connect to control socket {path}: {exc.strerror or exc}") from None
        sock.sendall(json.dumps({"cmd": command}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    except TimeoutError:
        raise ControlError(f"no answer from control socket {path} within {timeout}s") from None
    finally:
        sock.close()
    try:
        return json.loads(buf.decode())
    except ValueError:
        raise ControlError(f"malformed answer from control socket {path}: {buf[:200]!r}") from None
