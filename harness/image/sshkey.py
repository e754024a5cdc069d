"""The SSH key the harness logs into guests with: one ed25519 key per cache, generated once."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from harness.image.cache import ImageCache


@dataclass(frozen=True)
class SshKey:
    private_path: Path
    public_line: str


def ensure_ssh_key(cache: ImageCache) -> SshKey:
    private = cache.keys / "id_ed25519"
    public = cache.keys / "id_ed25519.pub"
    if not (private.exists() and public.exists()):
        with cache.lock("ssh-key", timeout=60):
            if not (private.exists() and public.exists()):
                _generate(private, public)
    return SshKey(private, public.read_text().strip())


def _generate(private: Path, public: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                        serialization.PublicFormat.OpenSSH)
    for path, data, mode in ((private, pem, 0o600), (public, pub + b" balloon-harness\n", 0o644)):
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        tmp.rename(path)
