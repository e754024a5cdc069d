"""Control socket: a unix stream socket answering one JSON request line with one JSON line.

The server is non-blocking and served from the daemon's own poll() loop (no threads).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024
CLIENT_TIMEOUT = 0.5  # a client that does not send its line promptly is dropped


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
        self._sock.listen(8)

    def fileno(self) -> int:
        return self._sock.fileno()

    def handle_ready(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            with conn:
                self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(CLIENT_TIMEOUT)
        buf = b""
        try:
            while b"\n" not in buf and len(buf) < MAX_REQUEST:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                buf += chunk
            try:
                request = json.loads(buf.decode() or "{}")
                if not isinstance(request, dict):
                    raise ValueError("request must be a JSON object")
                response = self.handler(request)
            except ValueError as exc:
                response = {"error": f"bad request: {exc}"}
            except Exception as exc:  # never let a client take the daemon down
                log.exception("control request failed")
                response = {"error": f"{type(exc).__name__}: {exc}"}
            conn.sendall(json.dumps(response, default=str).encode() + b"\n")
        except OSError as exc:
            log.debug("control client dropped: %s", exc)

    def close(self) -> None:
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
