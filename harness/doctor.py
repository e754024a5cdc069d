"""`balloon-harness doctor`: what is present, what is missing, and the command that fixes it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.accel import probe_kvm
from harness.hosttools import find_tool, install_hint
from harness.image.build import load_built
from harness.image.cache import ImageCache
from harness.image.recipe import Recipe
from harness.reaper import killed_record
from harness.runtime import all_runs


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    #: Optional things (libvirt, KVM) do not make the doctor fail.
    required: bool = True


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
        return out.splitlines()[0].strip() if out else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def _tool(name: str, version_args: list[str] | None, required: bool = True) -> Check:
    path = find_tool(name)
    if not path:
        return Check(name, False, "not installed", install_hint(name), required)
    return Check(name, True, f"{path} ({_version([path, *version_args])})" if version_args else path,
                 required=required)


def run_checks(cache: ImageCache | None = None) -> list[Check]:
    cache = cache or ImageCache.default()
    checks = [
        _tool("qemu-system-x86_64", ["--version"]),
        _tool("qemu-img", ["--version"]),
        _tool("mmdebstrap", ["--version"]),
        _tool("mkfs.ext4", None),
    ]
    kvm = probe_kvm()
    checks.append(Check("KVM", kvm.usable, kvm.reason + ("" if kvm.usable else "; guests run under TCG"),
                        "" if kvm.usable else "nothing to do (TCG works); for KVM use a host with "
                        "VT-x/AMD-V and rw access to /dev/kvm", required=False))
    checks.append(_tool("libvirtd", None, required=False))
    libvirt_py = importlib.util.find_spec("libvirt") is not None
    checks.append(Check("libvirt-python", libvirt_py, "importable" if libvirt_py else "not installed",
                        "apt-get install libvirt-dev pkg-config && pip install libvirt-python",
                        required=False))
    sock = Path("/var/run/libvirt/libvirt-sock")
    checks.append(Check("libvirtd running", sock.exists(),
                        f"{sock} {'present' if sock.exists() else 'absent'}",
                        "libvirtd -d && virtlogd -d (as root; or systemctl start libvirtd)",
                        required=False))
    try:
        recipe = Recipe.named()
        image = load_built(recipe, cache)
        checks.append(Check("guest image", image is not None,
                            str(image.disk) if image else f"{recipe.name} not built yet "
                            f"(key {recipe.cache_key()[:16]})",
                            "balloon-harness image build (about a minute, needs root)"))
    except Exception as exc:
        checks.append(Check("guest image", False, str(exc), "restore guest_images/ from git"))
    dead = [r for r in all_runs() if not r.owner_alive()]
    unreaped = [r for r in dead if killed_record(r) is None]
    kept = f"; evidence of {len(dead) - len(unreaped)} killed run(s) kept" if len(dead) > len(unreaped) else ""
    checks.append(Check("leftovers of killed runs", not unreaped,
                        (f"{len(unreaped)} dead run folder(s) not reaped" if unreaped else "none") + kept,
                        "balloon-harness reap (--purge also removes the evidence)", required=False))
    checks.append(Check("running as root", os.geteuid() == 0,
                        "yes" if os.geteuid() == 0 else "no: the image build needs root",
                        "sudo balloon-harness image build", required=False))
    return checks
