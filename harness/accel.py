"""Choosing the accelerator without a failed boot.

On some hosts /dev/kvm exists but cannot run an ordinary guest: the software nested
hypervisor `kvm_pvm` exposes /dev/kvm without VT-x/AMD-V, and a stock kernel dies with
"KVM internal error ... emulation failure" (QEMU then pauses instead of exiting). So KVM
is usable only if the CPU advertises vmx/svm, /dev/kvm opens read-write, and kvm_pvm is
not the module behind it.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path

from harness.errors import AccelUnavailable, ConfigError


class Accel(enum.Enum):
    AUTO = "auto"
    KVM = "kvm"
    TCG = "tcg"

    @classmethod
    def parse(cls, value: str | Accel) -> Accel:
        if isinstance(value, Accel):
            return value
        try:
            return cls(value.lower())
        except ValueError:
            raise ConfigError(f"Unknown accelerator {value!r}.",
                              fix="use one of: auto, kvm, tcg.") from None


#: How much slower than KVM a guest runs, for scaling every deadline. TCG on two host
#: cores was measured at 5-10x for boot; deadlines use the pessimistic end.
TIMEOUT_SCALE = {Accel.KVM: 1.0, Accel.TCG: 6.0}


@dataclass(frozen=True)
class KvmProbe:
    usable: bool
    reason: str


def probe_kvm(root: Path = Path("/")) -> KvmProbe:
    """Decide statically whether KVM can run an unmodified guest here. `root` is for tests."""
    dev = root / "dev/kvm"
    if not dev.exists():
        return KvmProbe(False, "/dev/kvm does not exist (no KVM module loaded)")
    if (root / "sys/module/kvm_pvm").exists():
        return KvmProbe(False, "/dev/kvm is provided by kvm_pvm, a software nested hypervisor "
                               "that cannot run an unmodified guest ('KVM internal error ... "
                               "emulation failure')")
    try:
        cpuinfo = (root / "proc/cpuinfo").read_text()
    except OSError as exc:
        return KvmProbe(False, f"cannot read /proc/cpuinfo: {exc}")
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    if not flags & {"vmx", "svm"}:
        return KvmProbe(False, "the CPU advertises neither vmx nor svm (no hardware "
                               "virtualization visible to this host)")
    if not os.access(dev, os.R_OK | os.W_OK):
        return KvmProbe(False, f"{dev} is not readable and writable by this user")
    return KvmProbe(True, "vmx/svm present and /dev/kvm is usable")


def resolve(requested: Accel | str, root: Path = Path("/")) -> Accel:
    """AUTO -> KVM where it works, else TCG. An explicit KVM that cannot work fails now.
    `root` is for tests (see probe_kvm)."""
    accel = Accel.parse(requested)
    if accel is Accel.TCG:
        return accel
    probe = probe_kvm(root)
    if accel is Accel.KVM and not probe.usable:
        raise AccelUnavailable(
            f"KVM was requested but cannot be used: {probe.reason}.",
            fix="use --vm-accel tcg (or auto); on a KVM host, load kvm_intel/kvm_amd and "
                "give this user rw access to /dev/kvm (e.g. add it to the 'kvm' group).")
    return Accel.KVM if probe.usable else Accel.TCG


TCG_TB_SIZE_MIB = 256
#: For guests on a host memory budget: the cache is QEMU's memory, charged to the budget and
#: out of the balloon's reach (measured here: a scenario's guests grew it by ~250 MiB each
#: in their first seconds, which filled a two-guest budget before any policy could act).
TCG_TB_SIZE_BUDGET_MIB = 64


def qemu_accel_args(accel: Accel, tb_size_mib: int = TCG_TB_SIZE_MIB) -> list[str]:
    if accel is Accel.KVM:
        return ["-accel", "kvm", "-cpu", "host"]
    if accel is Accel.TCG:
        # multi-threaded TCG: one host thread per vCPU; "max" enables every feature TCG
        # can emulate (the Debian kernel wants x86-64-v2 instructions such as cmpxchg16b).
        # tb-size: the translated-code cache defaults to 1 GiB and fills up over a long run,
        # which would show in the ledger as host memory the guest never had; 256 MiB holds
        # a Debian guest's hot code.
        return ["-accel", f"tcg,thread=multi,tb-size={tb_size_mib}", "-cpu", "max"]
    raise ValueError("resolve AUTO before building a command line")
