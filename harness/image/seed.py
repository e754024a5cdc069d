"""The cloud-init NoCloud seed (an ISO 9660 volume labelled `cidata`), one per VM.

It is written so that both cloud-init and the lean initrd's few lines of sed can read it:
`local-hostname:` on its own line in meta-data, one key per `  - ssh-...` line in user-data,
and the guest's SSH host key as cloud-init's `ssh_keys` (the private key a literal block
indented by four spaces between its BEGIN and END lines, the public key on its
`  ed25519_public:` line).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import pycdlib

from harness.image.sshkey import HostKey


@dataclass(frozen=True)
class SeedSpec:
    instance_id: str
    hostname: str
    authorized_keys: tuple[str, ...]
    swap_file_mib: int = 0
    extra_user_data: dict = field(default_factory=dict)
    #: The guest's SSH host key (the harness accepts no other).
    host_key: HostKey | None = None

    def meta_data(self) -> str:
        return f"instance-id: {self.instance_id}\nlocal-hostname: {self.hostname}\n"

    def user_data(self, *, redact: bool = False) -> str:
        """The user-data; `redact` leaves out the private host key (for the artifacts)."""
        lines = ["#cloud-config", f"hostname: {self.hostname}", "disable_root: false",
                 "ssh_pwauth: false", "ssh_authorized_keys:"]
        lines += [f"  - {key}" for key in self.authorized_keys]
        if self.host_key is not None:
            private = (["    (redacted)"] if redact else
                       ["    " + line for line in self.host_key.private_pem.strip().splitlines()])
            lines += ["ssh_deletekeys: true", "ssh_keys:", "  ed25519_private: |", *private,
                      f"  ed25519_public: {self.host_key.public_line}"]
        if self.swap_file_mib:
            lines += ["swap:", "  filename: /swapfile", f"  size: {self.swap_file_mib * 1048576}"]
        for key, value in self.extra_user_data.items():
            lines.append(f"{key}: {json.dumps(value)}")  # JSON is valid YAML
        return "\n".join(lines) + "\n"


def write_seed_iso(spec: SeedSpec, path: Path) -> Path:
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    try:
        for name, text in (("meta-data", spec.meta_data()), ("user-data", spec.user_data())):
            data = text.encode()
            iso_name = "/" + name.replace("-", "").upper() + ".;1"
            iso.add_fp(io.BytesIO(data), len(data), iso_name, rr_name=name,
                       joliet_path="/" + name)
        tmp = path.with_suffix(".tmp")
        iso.write(str(tmp))
    finally:
        iso.close()
    tmp.rename(path)
    return path
