"""Running harness code as the unprivileged user `nobody`, wherever the checkout lives.

The checkout (or the venv, or the interpreter it points to) may sit in a folder `nobody`
cannot read (a clone under /root, a `mktemp -d` folder of mode 0700). So the unprivileged
side never imports from there: the modules a given import loads (the harness package and
the third-party packages it pulls in) are copied into a world-readable folder under /tmp,
and the system python3 runs them from there.

The fixtures are registered for tests/unit by its conftest.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
REPO = Path(__file__).resolve().parents[2]
#: What the unprivileged side imports: the modules below and everything they load.
IMPORTS = ("harness.cli", "harness.machine.libvirt", "harness.reaper", "harness.runtime",
           "harness.image.sshkey", "libvirt", "libvirt_qemu")


def _loaded_top_levels(imports: tuple[str, ...]) -> list[Path]:
    """Files or folders of every top-level module that importing `imports` loads from
    outside the standard library (the system python has its own)."""
    code = ("import importlib, json, sys\n"
            f"for name in {list(imports)!r}:\n"
            "    try:\n        importlib.import_module(name)\n    except ImportError:\n        pass\n"
            "print(json.dumps(sorted({getattr(m, '__file__', None) or '' for m in list(sys.modules.values())})))")
    files = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                      text=True, cwd=REPO).stdout)
    sites = [Path(p) for p in sys.path if p.endswith("site-packages")]
    roots = [*sites, REPO]
    # Package metadata too: some packages ask importlib.metadata for their own version.
    tops: set[Path] = {info for site in sites for info in site.glob("*.dist-info")}
    for name in files:
        path = Path(name)
        for root in roots:  # site-packages first: a venv may live inside the checkout
            if root in path.parents:
                tops.add(root / path.relative_to(root).parts[0])
                break
    return sorted(tops)


@dataclass(frozen=True)
class NobodyPython:
    """The system python3 run as `nobody` with a world-readable copy of the harness."""

    path: Path

    def argv(self, *args: str, env: dict[str, str] | None = None) -> list[str]:
        extra = [f"{k}={v}" for k, v in (env or {}).items()]
        return ["runuser", "-u", "nobody", "--", "env", f"PYTHONPATH={self.path}", "HOME=/tmp",
                *extra, SYSTEM_PYTHON, *args]

    def run(self, code: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv("-c", code, env=env), capture_output=True, text=True,
                              timeout=timeout, cwd="/tmp")


def _usable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to drop to the unprivileged user nobody"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
                           capture_output=True, text=True)
    if probe.returncode != 0 or probe.stdout.strip() != str(sys.version_info[:2]):
        return f"needs a system python3 ({SYSTEM_PYTHON}) of this venv's version {sys.version_info[:2]}"
    return None


@pytest.fixture(scope="session")
def nobody_python() -> Iterator[NobodyPython]:
    if reason := _usable():
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="bh-nobody-py-"))
    try:
        for top in _loaded_top_levels(IMPORTS):
            if top.is_dir():
                shutil.copytree(top, folder / top.name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(top, folder / top.name)
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield NobodyPython(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder both root and nobody can create entries in (mode 1777, like /tmp), under
    /tmp, removed afterwards whatever nobody left in it."""
    folder = Path(tempfile.mkdtemp(prefix="bh-shared-"))
    folder.chmod(0o1777)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
