"""The facts of the environment a run ran in, so that someone re-running it elsewhere can see
what differs: harness version and commit, guest image and kernel, QEMU and libvirt, the
accelerator, and the host (kernel, CPU, memory, swap).

A run writes them into its folder when it starts (`environment.json`); a bundle of a folder
without them gathers them when it is made, and says so (`gathered`)."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import harness
from harness.image.guest_image import GuestImage, ImageKind

FACTS_FILE = "environment.json"


@dataclass(frozen=True)
class EnvFacts:
    harness_version: str
    #: The checkout's commit ("+ local changes" when modified), None outside a git checkout.
    git_commit: str | None = None
    #: What `--image` takes to get the same image: a recipe name, or a path or URL.
    image: str | None = None
    #: The recipe's hash, or the cloud image's sha256 (what names its saved states).
    image_identity: str | None = None
    guest_kernel: str | None = None
    qemu_version: str | None = None
    libvirt_version: str | None = None
    backend: str | None = None
    accel: str | None = None
    host_kernel: str | None = None
    cpu_model: str | None = None
    cpu_count: int | None = None
    host_memory_mib: int | None = None
    host_swap_mib: int | None = None
    #: When they were gathered: "run" (at its start) or "bundle" (when the bundle was made).
    gathered: str = "run"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> EnvFacts:
        """Tolerant of a bundle from another version: unknown keys are dropped, missing ones
        are unknown (None)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("harness_version", "?")
        return cls(**values)

    @classmethod
    def load(cls, path: Path) -> EnvFacts | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return cls.from_dict(data) if isinstance(data, dict) else None


LABELS = {
    "harness_version": "harness version", "git_commit": "harness commit", "image": "guest image",
    "image_identity": "image recipe hash / sha256", "guest_kernel": "guest kernel", "qemu_version": "QEMU",
    "libvirt_version": "libvirt", "backend": "backend", "accel": "accelerator", "host_kernel": "host kernel",
    "cpu_model": "host CPU model", "cpu_count": "host CPUs", "host_memory_mib": "host memory (MiB)",
    "host_swap_mib": "host swap (MiB)",
}


@dataclass(frozen=True)
class FactDiff:
    name: str
    label: str
    original: object
    now: object


def diff_facts(original: EnvFacts, now: EnvFacts) -> list[FactDiff]:
    """The facts that differ, in LABELS order (when they were gathered is not a fact)."""
    a, b = dataclasses.asdict(original), dataclasses.asdict(now)
    return [FactDiff(name, label, a[name], b[name]) for name, label in LABELS.items() if a[name] != b[name]]


# -- gathering ----------------------------------------------------------------------------------
def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo's kB fields, in MiB."""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key.strip()] = int(parts[0]) // 1024
    return out


def parse_cpu_model(cpuinfo: str) -> str | None:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "cpu model"):
            return value.strip()
    return None


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def git_commit(root: Path | None = None) -> str | None:
    root = root or Path(harness.__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None  # an installed package: its version says it
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + (" + local changes" if dirty.stdout.strip() else "")


def image_facts(image: GuestImage | None) -> dict:
    if image is None:
        return {}
    facts: dict = {"image_identity": image.identity}
    if image.kind is ImageKind.BUILT:
        from harness.image.build import MANIFEST
        try:
            manifest = json.loads((image.disk.parent / MANIFEST).read_text())
        except (OSError, ValueError):
            manifest = {}
        facts["image"] = manifest.get("recipe") or image.disk.parent.name
        facts["guest_kernel"] = manifest.get("kernel_version")
    else:
        facts["image"] = str(image.disk)
    return facts


def qemu_version() -> str | None:
    from harness.errors import HarnessError
    from harness.machine.qemu import qemu_binary
    from harness.machine.snapshot import _qemu_version
    try:
        version = _qemu_version(qemu_binary())
    except HarnessError:
        return None
    return version if version not in ("", "?") else None


def libvirt_version() -> str | None:
    try:
        import libvirt
        n = libvirt.getVersion()
    except Exception:  # not installed, or the library cannot load
        return None
    return f"{n // 1_000_000}.{n // 1000 % 1000}.{n % 1000}"


def gather(image: GuestImage | None = None, accel: str | None = None, backend: str | None = None,
           gathered: str = "run") -> EnvFacts:
    memory = parse_meminfo(_read("/proc/meminfo"))
    return EnvFacts(
        harness_version=harness.__version__, git_commit=git_commit(), **image_facts(image),
        qemu_version=qemu_version(), libvirt_version=libvirt_version(), backend=backend, accel=accel,
        host_kernel=platform.release(), cpu_model=parse_cpu_model(_read("/proc/cpuinfo")),
        cpu_count=os.cpu_count(), host_memory_mib=memory.get("MemTotal"), host_swap_mib=memory.get("SwapTotal"),
        gathered=gathered)
