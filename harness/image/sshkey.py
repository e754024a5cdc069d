"""SSH keys: the key the harness logs into guests with (one ed25519 key per cache, made
once), and the guests' host keys (one per booted VM, kept by its saved state), so that the
harness knows whom it talks to.

The login key gives root in every guest, so it must stay ours alone: each file is written
through a temporary of its own (unique name, O_EXCL, the final mode from the start), and
the private key is refused at every load if anyone else could read it or swap it.
"""

from __future__ import annotations

import base64
import io
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from harness.errors import HarnessError
from harness.image.cache import ImageCache

KEY_TYPE = "ssh-ed25519"


class UnsafeKey(HarnessError):
    """A private key (or its folder) that someone else could read or replace."""


def write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Put `data` at `path` atomically, through a temporary made for this write only (so no
    leftover file, whatever its mode, is ever reused), created with `mode` and set to it
    exactly (the umask does not loosen or narrow it)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _user(uid: int) -> str:
    return "you" if uid == os.geteuid() else f"uid {uid}"


def read_private_file(path: Path) -> bytes:
    """The content of a file only we may read: a regular file (not a link) of ours with no
    group or other permissions, in a folder no one else can write. One open, then checks on
    what was opened."""
    folder = os.stat(path.parent)  # the folder itself: a link to it has no mode of its own
    if folder.st_uid not in (0, os.geteuid()) or stat.S_IMODE(folder.st_mode) & 0o022:
        raise UnsafeKey(f"The folder {path.parent} of the private key has mode "
                        f"{stat.S_IMODE(folder.st_mode):04o} and belongs to {_user(folder.st_uid)}: "
                        f"others could replace the key.",
                        fix=f"chmod 700 {path.parent} (it must be yours or root's).")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if os.path.islink(path):
            raise UnsafeKey(f"The private key {path} is a symbolic link; the harness reads "
                            f"its key only from a file of its own.",
                            fix=f"remove the link {path} and {path}.pub; a new key is made.") from None
        raise UnsafeKey(f"Cannot read the private key {path}: {exc.strerror}.",
                        fix=f"remove {path} and {path}.pub; a new key is made.") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise UnsafeKey(f"The private key {path} belongs to {_user(st.st_uid)}, not to you "
                            f"(uid {os.geteuid()}).",
                            fix=f"remove {path} and {path}.pub; a new key is made.")
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise UnsafeKey(f"The private key {path} has mode {stat.S_IMODE(st.st_mode):04o}: "
                            f"other users can read it, and with it log into every guest as root.",
                            fix=f"chmod 600 {path}, or remove {path} and {path}.pub so that a new "
                                f"key is made (the old one should be considered known).")
        return fh.read()


@dataclass(frozen=True)
class SshKey:
    """The login key: its private file and its public line for authorized_keys."""

    private_path: Path
    public_line: str

    def load(self) -> paramiko.Ed25519Key:
        """The private key for paramiko, read from the checked file."""
        return paramiko.Ed25519Key.from_private_key(io.StringIO(read_private_file(self.private_path).decode()))


def ensure_ssh_key(cache: ImageCache) -> SshKey:
    private = cache.keys / "id_ed25519"
    public = cache.keys / "id_ed25519.pub"
    if not (os.path.lexists(private) and public.exists()):
        with cache.lock("ssh-key", timeout=60):
            if not (os.path.lexists(private) and public.exists()):
                _generate(private, public)
    key = SshKey(private, public.read_text().strip())
    if key.load().get_base64() != key.public_line.split()[1]:
        raise HarnessError(f"{public} is not the public half of {private}.",
                           fix="remove both files; a new key is made.")
    return key


def _openssh_pair() -> tuple[bytes, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return pem, pub.decode()


def _generate(private: Path, public: Path) -> None:
    pem, pub = _openssh_pair()
    write_new_file(private, pem, 0o600)
    write_new_file(public, f"{pub} balloon-harness\n".encode(), 0o644)


@dataclass(frozen=True)
class HostKey:
    """A guest's SSH host key. The private half goes into the VM's seed (the guest's
    sshd uses it); the public half is what the harness accepts and nothing else."""

    private_pem: str
    public_line: str  # "ssh-ed25519 AAAA..."

    @classmethod
    def generate(cls) -> HostKey:
        pem, pub = _openssh_pair()
        return cls(pem.decode(), pub)


def known_host_key(public_line: str) -> paramiko.PKey:
    """The paramiko key of a public line `ssh-ed25519 AAAA...`."""
    kind, b64 = public_line.split()[:2]
    if kind != KEY_TYPE:
        raise HarnessError(f"Unsupported host key type {kind!r} (the harness gives guests {KEY_TYPE} keys).")
    return paramiko.Ed25519Key(data=base64.b64decode(b64))
