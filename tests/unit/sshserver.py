"""A real SSH server on 127.0.0.1 (paramiko's server side, real TCP and handshake) with a
host key of our choosing, that lets one client key in and answers `exec` with the command
echoed back: enough to see whom the harness's SSH client agrees to talk to."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import paramiko


class _Server(paramiko.ServerInterface):
    def __init__(self, client_key_b64: str) -> None:
        self.client_key_b64 = client_key_b64

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = key.get_base64() == self.client_key_b64
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        # This runs on the transport's thread before it sends the request's success reply, so
        # the answer thread may overtake that reply. Data, EOF and exit status may (the client
        # buffers them); a close may not: a client still waiting for the reply reads it as
        # "Channel closed". So the client closes, as it does with a real sshd.
        def answer() -> None:
            channel.sendall(command + b"\n")
            channel.shutdown_write()
            channel.send_exit_status(0)
        threading.Thread(target=answer, daemon=True).start()
        return True


@contextmanager
def ssh_server(host_key: paramiko.PKey, client_key_b64: str) -> Iterator[int]:
    """Serve until the block ends; yields the port."""
    listener = socket.create_server(("127.0.0.1", 0))
    transports: list[paramiko.Transport] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(host_key)
            transports.append(transport)
            try:
                transport.start_server(server=_Server(client_key_b64))
            except (paramiko.SSHException, EOFError):
                pass  # the client walked away (a refused host key)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
        listener.close()
        for transport in transports:
            transport.close()
        thread.join(5)
