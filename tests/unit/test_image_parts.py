"""Image pieces that need no VM: the seed ISO, the initrd writer, the recipe key."""

import io
import shutil
import stat

import pycdlib
import pytest

from harness.errors import ConfigError
from harness.image.initrd import CpioEntry, write_newc
from harness.image.recipe import Recipe
from harness.image.seed import SeedSpec, write_seed_iso
from harness.resources import guest_images_dir


def read_iso(path, name):
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, rr_path="/" + name)
        label = iso.pvd.volume_identifier.decode().strip()
        return label, out.getvalue().decode()
    finally:
        iso.close()


def test_seed_iso_is_nocloud(tmp_path):
    spec = SeedSpec(instance_id="i-1", hostname="guest-a", authorized_keys=("ssh-ed25519 AAAA key",),
                    swap_file_mib=64)
    path = write_seed_iso(spec, tmp_path / "seed.iso")
    label, meta = read_iso(path, "meta-data")
    assert label == "cidata"
    assert "instance-id: i-1\n" in meta and "local-hostname: guest-a\n" in meta
    _, user = read_iso(path, "user-data")
    assert user.startswith("#cloud-config\n")
    # The lean initrd reads keys with sed: one "  - ssh-..." line per key.
    assert "\n  - ssh-ed25519 AAAA key\n" in user
    assert "size: 67108864" in user


def parse_newc(data: bytes):
    entries, pos = [], 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize, mode = fields[11], fields[6], fields[1]
        name_start = pos + 110
        name = data[name_start:name_start + namesize - 1].decode()
        pos = name_start + namesize
        pos += -pos % 4
        body = data[pos:pos + filesize]
        pos += filesize
        pos += -pos % 4
        if name == "TRAILER!!!":
            return entries
        entries.append((name, mode, body))


def test_newc_roundtrip(tmp_path):
    out = tmp_path / "initrd"
    write_newc([CpioEntry("bin", stat.S_IFDIR | 0o755),
                CpioEntry("init", stat.S_IFREG | 0o755, b"#!/bin/sh\necho hi\n"),
                CpioEntry("odd", stat.S_IFREG | 0o644, b"x")], out)
    entries = parse_newc(out.read_bytes())
    assert [(n, m) for n, m, _ in entries] == [("bin", stat.S_IFDIR | 0o755), ("init", stat.S_IFREG | 0o755),
                                               ("odd", stat.S_IFREG | 0o644)]
    assert entries[1][2] == b"#!/bin/sh\necho hi\n"


def copy_recipe(tmp_path):
    folder = tmp_path / "debian-bookworm"
    shutil.copytree(guest_images_dir() / "debian-bookworm", folder)
    return folder


def test_recipe_key_changes_with_any_recipe_file(tmp_path):
    folder = copy_recipe(tmp_path)
    before = Recipe.load(folder).cache_key()
    assert Recipe.load(folder).cache_key() == before  # stable
    (folder / "rootfs/etc/motd").write_text("changed\n")
    assert Recipe.load(folder).cache_key() != before


def test_broken_recipe_names_the_file(tmp_path):
    folder = copy_recipe(tmp_path)
    (folder / "recipe.toml").write_text("[image]\nname = 'x'\n")
    with pytest.raises(ConfigError, match="recipe.toml"):
        Recipe.load(folder)
