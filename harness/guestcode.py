"""Putting the harness's guest side into a running guest: the standard-library code under
harness/guest (the Intermediate daemon, the ledger sampler), its systemd unit and the
workloads. The built image already carries the daemon; syncing again makes the guest run
exactly the host's version, and makes user-supplied cloud images work too."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import tarfile

from harness.machine.base import Machine
from harness.resources import guest_install_files

GUEST_ROOT = "/opt/balloon-harness"
GUEST_DATA = "/var/lib/balloon-harness"
WORKLOADS = f"{GUEST_ROOT}/workloads"


@functools.cache  # the files do not change under a running harness
def _bundle() -> tuple[bytes, str]:
    """A tarball of everything to install, and its digest (to skip a repeated install)."""
    buf = io.BytesIO()
    digest = hashlib.sha256()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for src, name in guest_install_files(workloads=True):
            data = src.read_bytes()
            digest.update(name.encode() + b"\0" + data)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if src.suffix == ".py" and src.parent.name == "workloads" else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue(), digest.hexdigest()


def bundle_digest() -> str:
    """What a saved guest state is keyed by instead of the image: the guest code synced into
    it before it was saved."""
    return _bundle()[1]


def install_guest_code(machine: Machine) -> str:
    """Install (or refresh) the guest side; returns the bundle digest. Idempotent and cheap
    when the guest already has this exact bundle."""
    data, digest = _bundle()
    marker = f"{GUEST_DATA}/bundle.sha256"
    have = machine.ssh.run(f"cat {marker} 2>/dev/null || true").stdout.strip()
    if have == digest:
        return digest
    machine.ssh.run(f"mkdir -p {GUEST_DATA}")
    remote = f"{GUEST_DATA}/bundle.tar.gz"
    machine.ssh.write_bytes(remote, data)
    machine.ssh.run(f"tar -xzf {remote} -C / && rm -f {remote} && systemctl daemon-reload "
                    f"&& echo {digest} > {marker}")
    return digest


def read_guest_jsonl(machine: Machine, path: str, timeout: float | None = None) -> list[dict]:
    """The JSON lines of a guest file (missing file: none); a line cut short by a kill is skipped."""
    text = machine.ssh.run(f"cat {path} 2>/dev/null || true", timeout=timeout).stdout
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records
