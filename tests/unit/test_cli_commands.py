"""`balloon-harness doctor`, `scenarios` and `image build [--force]`, run as a user runs them
(a real process, the real host tools), against a private image cache so that nothing here
touches the shared one. No VM boots."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.image.build import MANIFEST, image_dir
from harness.image.cache import ImageCache
from harness.image.recipe import Recipe
from harness.scenario.model import load_scenario, shipped_scenarios

#: Nothing listens here: a build that reaches for this mirror fails within seconds.
DEAD_MIRROR = "http://127.0.0.1:9/debian"


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BALLOON_HARNESS_")}
    done = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          env={**clean, "COLUMNS": "250", **env}, timeout=timeout)
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done


@pytest.fixture
def private_env(tmp_path) -> dict[str, str]:
    return {"BALLOON_HARNESS_CACHE": str(tmp_path / "cache"), "BALLOON_HARNESS_RUNTIME": str(tmp_path / "run"),
            "BALLOON_HARNESS_MIRROR": DEAD_MIRROR}


def cached_image(cache_root: Path) -> Path:
    """What a finished build of the default recipe leaves in the cache (its manifest is what
    marks it complete; the files are stand-ins: nothing here boots them)."""
    recipe = Recipe.named()
    folder = image_dir(recipe, ImageCache(cache_root))
    folder.mkdir(parents=True)
    for name in ("disk.qcow2", "vmlinuz", "initrd.lean"):
        (folder / name).write_bytes(b"stand-in")
    (folder / MANIFEST).write_text(json.dumps({"key": recipe.cache_key(), "built": "2026-01-01T00:00:00Z",
                                               "kernel_version": "6.1.0-test"}))
    return folder


def rows(output: str) -> dict[str, str]:
    """The doctor's table: check name -> the rest of its first line."""
    table = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 4 and cells[0]:
            table[cells[0]] = " | ".join(cells[1:])
    return table


def test_doctor_passes_here_and_names_each_check(private_env, tmp_path):
    cached_image(tmp_path / "cache")
    done = cli("doctor", env=private_env)
    assert done.returncode == 0, done.stdout
    table = rows(done.stdout)
    for name in ("qemu-system-x86_64", "qemu-img", "mmdebstrap", "mkfs.ext4", "KVM", "guest image",
                 "leftovers of killed runs"):
        assert name in table, done.stdout
    for required in ("qemu-system-x86_64", "qemu-img", "mmdebstrap", "guest image"):
        assert table[required].startswith("ok"), table[required]
    assert str(tmp_path / "cache") in done.stdout  # the image it found is the private cache's


def test_doctor_fails_on_a_missing_requirement_and_names_the_fix(private_env, tmp_path):
    # No image in the cache, and no qemu-system-x86_64 to be found: both required.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("qemu-img", "mmdebstrap", "perl"):
        (bin_dir / tool).symlink_to(subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip())
    done = cli("doctor", env={**private_env, "PATH": str(bin_dir)})
    assert done.returncode == 1, done.stdout
    table = rows(done.stdout)
    assert table["qemu-system-x86_64"].startswith("missing"), done.stdout
    assert "apt-get install -y qemu-system-x86" in done.stdout
    assert table["guest image"].startswith("missing") and "balloon-harness image build" in done.stdout
    assert table["qemu-img"].startswith("ok")


def test_doctor_looks_at_the_qemu_the_harness_will_use(private_env, tmp_path):
    cached_image(tmp_path / "cache")
    # Wide enough for the path of an xdist worker's tmp_path on one line of the table.
    done = cli("doctor", env={**private_env, "BALLOON_HARNESS_QEMU": str(tmp_path / "no-qemu"), "COLUMNS": "400"})
    assert done.returncode == 1, done.stdout
    assert re.search(r"BALLOON_HARNESS_QEMU=\S*no-qemu is not an executable", done.stdout), done.stdout


def test_scenarios_lists_every_shipped_scenario_with_its_description(private_env):
    done = cli("scenarios", env=private_env)
    assert done.returncode == 0, done.stdout
    flat = " ".join(done.stdout.split())  # wrapped or not
    shipped = shipped_scenarios()
    assert len(shipped) >= 3
    for name, path in shipped.items():
        assert f"{name} {' '.join(load_scenario(path).description.split())}" in flat, (name, done.stdout)


def test_image_build_uses_the_cache_and_force_rebuilds(private_env, tmp_path):
    """Without --force a built image is used as it is (no build: the dead mirror is never
    asked); with --force the build runs although the image is cached, and when it fails the
    cached image stays as it was. (A full rebuild takes minutes: `make image` does one.)"""
    folder = cached_image(tmp_path / "cache")
    manifest = (folder / MANIFEST).read_text()
    done = cli("image", "build", env=private_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "image ready:" in done.stdout and str(folder / "disk.qcow2") in " ".join(done.stdout.split())
    assert "mmdebstrap" not in done.stdout + done.stderr

    forced = cli("image", "build", "--force", env=private_env, timeout=300)
    out = forced.stdout + forced.stderr
    assert forced.returncode == 2, out
    # It tried to build: as root, mmdebstrap ran against the mirror and failed; otherwise the
    # build stopped at its first requirement, root, naming it.
    if os.geteuid() == 0:
        assert "mmdebstrap failed" in out and "127.0.0.1:9" in out, out
    else:
        assert "needs root" in out, out
    assert (folder / MANIFEST).read_text() == manifest
    assert [p.name for p in folder.parent.iterdir()] == [folder.name], "a half-built image was left"
