"""Where a scenario's machines run and write on the host: inside its budget cgroup (QEMU
joins it between fork and exec; libvirt places the domain in a partition), with the guest's
live evidence port written straight into the run folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The virtio-serial port every machine has; the guest sampler streams its samples (and the
#: daemon's events) on it, QEMU writes them to a host file.
GUEST_PORT_NAME = "org.balloon-harness.ledger"
GUEST_STREAM = "guest-stream.jsonl"


@dataclass(frozen=True)
class Placement:
    #: cgroup.procs of the budget cgroup; QEMU writes "0" to it before exec.
    cgroup_procs: Path | None = None
    #: libvirt resource partition (e.g. "/bh-1234ab-1") holding the scenario's domains.
    libvirt_partition: str | None = None
    #: Each machine streams into <evidence_dir>/<vm name>/guest-stream.jsonl.
    evidence_dir: Path | None = None
    #: TCG's translated-code cache, when a budget asks for a small one (None: the default).
    tcg_tb_mib: int | None = None

    def stream_file(self, vm_name: str) -> Path | None:
        if self.evidence_dir is None:
            return None
        folder = self.evidence_dir / vm_name
        folder.mkdir(parents=True, exist_ok=True)
        return folder / GUEST_STREAM
