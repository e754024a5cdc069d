"""Commands and files over SSH (fabric on paramiko).

Every command the harness runs is prefixed with BALLOON_HARNESS_CONTROL=1: the Intermediate
daemon never stops a process that carries it, so the harness's own short control commands
stay out of its way while workloads (started detached through systemd-run, which does not
pass the variable on) remain ordinary, stoppable processes.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import shlex
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko
from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut

from harness.errors import GuestCommandError, HarnessError
from harness.guest.intermediate.config import CONTROL_ENV_MARKER as CONTROL_ENV
from harness.image.sshkey import SshKey, known_host_key

# Readiness polling makes paramiko log every refused banner at ERROR; failures that matter
# reach the caller as SshUnavailable with the cause.
logging.getLogger("paramiko.transport").setLevel(logging.CRITICAL)


class SshUnavailable(HarnessError):
    """The guest did not accept an SSH session."""


class HostKeyMismatch(HarnessError):
    """What answered is not the guest the harness gave its host key to. Not retried."""


def fingerprint(key: paramiko.PKey) -> str:
    """As `ssh-keygen -l` prints it: SHA256:base64 of the key blob."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def killed_by_timeout(exited: int, elapsed_s: float, timeout_s: float) -> bool:
    """Did invoke's timer end this command, although it did not say so? Its timer closes the
    channel (the command then has no exit status: -1), and `run` raises CommandTimedOut only if
    the timer's thread has already returned; when `run` gets there first (a loaded host), it
    returns the result instead. Seen here: `sleep 30` with a 2 s timeout "exited with -1"."""
    return exited == -1 and elapsed_s >= timeout_s


@dataclass(frozen=True)
class CommandResult:
    command: str
    stdout: str
    stderr: str
    exit_status: int
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def check(self) -> CommandResult:
        if not self.ok:
            raise GuestCommandError(self.command, self.exit_status, self.stdout, self.stderr)
        return self


class GuestShell:
    def __init__(self, name: str, host: str, port: int, user: str, key: SshKey, host_key: str,
                 default_timeout: float) -> None:
        """`host_key` is the guest's public host key line (`ssh-ed25519 AAAA...`): the only
        one accepted."""
        self.name = name
        self.host = host
        self.port = port
        self.user = user
        self.key = key
        self.host_key = known_host_key(host_key)
        self.default_timeout = default_timeout
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    # -- connection ---------------------------------------------------------------------
    def _connection(self, connect_timeout: float | None = None) -> Connection:
        with self._lock:
            if self._conn is not None and self._conn.is_connected:
                return self._conn
            timeout = max(1, int(connect_timeout or self.default_timeout))
            conn = Connection(
                self.host, user=self.user, port=self.port, connect_timeout=timeout,
                config=Config(overrides={"load_ssh_configs": False, "run": {"hide": True}}),
                connect_kwargs={"pkey": self.key.load(), "look_for_keys": False,
                                "allow_agent": False, "banner_timeout": timeout,
                                "auth_timeout": timeout},
            )
            # Only the guest's own host key: paramiko rejects any other (fabric would add it).
            conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
            conn.client.get_host_keys().add(f"[{self.host}]:{self.port}", self.host_key.get_name(),
                                            self.host_key)
            try:
                conn.open()
            except paramiko.BadHostKeyException as exc:
                conn.close()
                raise HostKeyMismatch(
                    f"{self.name} ({self.host}:{self.port}) presented the SSH host key "
                    f"{fingerprint(exc.key)}, not {fingerprint(self.host_key)}, the one the "
                    f"harness gave it; refusing to talk to it.",
                    fix="something else answers on that port, or the guest did not install the "
                        "key from its seed (a saved state made by an older harness: delete the "
                        "cache's snapshots/ folder).") from None
            except (paramiko.SSHException, OSError, EOFError) as exc:
                conn.close()
                raise SshUnavailable(f"SSH to {self.name} ({self.user}@{self.host}:{self.port}) "
                                     f"failed: {exc.__class__.__name__}: {exc}") from None
            # Keepalives notice a guest that vanished instead of hanging on a dead socket.
            conn.transport.set_keepalive(5)
            self._conn = conn
            return conn

    def try_connect(self, timeout: float) -> bool:
        """One connection attempt, for readiness polling."""
        try:
            self._connection(timeout)
            return True
        except SshUnavailable:
            return False

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- commands -----------------------------------------------------------------------
    def run(self, command: str, *, timeout: float | None = None, check: bool = True,
            control: bool = True) -> CommandResult:
        """Run `command` through the guest's /bin/sh. `check` raises on a non-zero exit."""
        timeout = timeout or self.default_timeout
        conn = self._connection()
        wrapped = f"{CONTROL_ENV} sh -c {shlex.quote(command)}" if control else command
        started = time.monotonic()
        try:
            result = conn.run(wrapped, warn=True, hide=True, timeout=timeout, in_stream=False)
            timed_out = killed_by_timeout(result.exited, time.monotonic() - started, timeout)
        except CommandTimedOut as exc:
            result, timed_out = exc.result, True
        except (TimeoutError, paramiko.SSHException, OSError, EOFError) as exc:
            self.close()
            raise SshUnavailable(f"SSH to {self.name} broke while running {command!r}: "
                                 f"{exc.__class__.__name__}: {exc}") from None
        if timed_out:
            raise GuestCommandError(command, -1, result.stdout, f"timed out after {timeout:.0f} s\n{result.stderr}")
        out = CommandResult(command, result.stdout, result.stderr, result.exited,
                            time.monotonic() - started)
        return out.check() if check else out

    def put(self, local: Path | str, remote: str) -> None:
        self._connection().put(str(local), remote)

    def get(self, remote: str, local: Path | str) -> None:
        self._connection().get(remote, str(local))

    def write_text(self, remote: str, text: str) -> None:
        self.write_bytes(remote, text.encode())

    def write_bytes(self, remote: str, data: bytes) -> None:
        with self._connection().sftp().open(remote, "wb") as fh:
            fh.write(data)

    def read_text(self, remote: str) -> str:
        with self._connection().sftp().open(remote, "r") as fh:
            return fh.read().decode()
