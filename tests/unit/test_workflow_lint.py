"""The nightly workflow passes its own linters, so that it cannot regress unseen: zizmor
(offline: unpinned actions, persisted checkout credentials, missing permissions, template
injection...) and actionlint (syntax, expressions, runner labels, shellcheck of `run:` where
shellcheck is installed). Both come with the dev extra; a missing one skips, naming itself."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def tool(name: str) -> str:
    beside_python = Path(sys.executable).parent / name  # the venv's, when PATH does not have it
    found = shutil.which(name) or (str(beside_python) if beside_python.exists() else None)
    if found is None:
        pytest.skip(f"{name} is not installed: pip install -e '.[dev]' (see pyproject.toml) to check the workflow")
    return found


def lint(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run([*command, *map(str, WORKFLOWS)], capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_there_is_one_nightly_workflow():
    assert [p.name for p in WORKFLOWS] == ["nightly.yml"]
    assert not (ROOT / "ci" / "github").exists(), "one copy only: .github/workflows/ is where GitHub reads it"


def test_zizmor_offline_finds_nothing():
    done = lint(tool("zizmor"), "--offline", "--no-progress")
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_finds_nothing():
    done = lint(tool("actionlint"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_cache_holds_images_only_never_the_ssh_key():
    """The key (and the saved states, which hold its public half) are made per job: a cached
    private key would be shared by every run that can restore the cache."""
    text = WORKFLOWS[0].read_text()
    steps = re.split(r"\n\s*- (?=uses:|name:)", text)
    cache_paths = [re.search(r"\n\s*path:\s*(.+)", step).group(1).strip()
                   for step in steps if re.search(r"uses: actions/cache(/\w+)?@", step)]
    assert cache_paths, "the workflow caches the built images"
    assert all(path == "${{ env.BALLOON_HARNESS_CACHE }}/images" for path in cache_paths), cache_paths
