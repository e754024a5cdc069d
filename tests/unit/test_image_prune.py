"""Pruning old guest image builds never removes one that another checkout may be using."""

import os
import subprocess
import time

import pytest

from harness.image.build import LAST_USED, MANIFEST, PRUNE_UNUSED_FOR_S, load_built, prune
from harness.image.cache import ImageCache
from harness.image.recipe import Recipe


def fake_build(cache: ImageCache, recipe: Recipe, key: str, used_ago_s: float):
    folder = cache.images / f"{recipe.name}-{key}"
    folder.mkdir(parents=True)
    (folder / MANIFEST).write_text("{}")
    (folder / LAST_USED).touch()
    when = time.time() - used_ago_s
    os.utime(folder / LAST_USED, (when, when))
    os.utime(folder / MANIFEST, (when, when))
    return folder


def test_prune_keeps_the_newest_and_every_build_used_lately(tmp_path):
    cache, recipe = ImageCache(tmp_path), Recipe.named()
    day = PRUNE_UNUSED_FOR_S
    newest = fake_build(cache, recipe, "aaaa", 10)
    second = fake_build(cache, recipe, "bbbb", 20)
    busy = fake_build(cache, recipe, "cccc", 30)          # a third checkout booted from it just now
    stale = fake_build(cache, recipe, "dddd", 2 * day)
    older = fake_build(cache, recipe, "eeee", 3 * day)
    assert sorted(prune(recipe, cache)) == [stale, older]
    assert newest.exists() and second.exists() and busy.exists()
    assert not stale.exists() and not older.exists()


def test_loading_a_build_marks_it_used(tmp_path):
    cache, recipe = ImageCache(tmp_path), Recipe.named()
    from harness.image.build import image_dir
    folder = image_dir(recipe, cache)
    folder.mkdir(parents=True)
    (folder / MANIFEST).write_text('{"key": "k", "built": "now", "kernel_version": "6.1"}')
    old = time.time() - 3 * PRUNE_UNUSED_FOR_S
    os.utime(folder / MANIFEST, (old, old))
    assert load_built(recipe, cache) is not None
    assert time.time() - (folder / LAST_USED).stat().st_mtime < PRUNE_UNUSED_FOR_S


def test_prune_removes_half_built_trees_of_killed_builds_only(tmp_path):
    cache, recipe = ImageCache(tmp_path), Recipe.named()
    dead = cache.images / f".{recipe.name}-ffff.tmp-{2**22 + 1}"   # above pid_max: never alive
    alive = cache.images / f".{recipe.name}-ffff.tmp-{os.getpid()}"
    for folder in (dead, alive):
        (folder / "root").mkdir(parents=True)
    assert prune(recipe, cache) == [dead]
    assert not dead.exists() and alive.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_a_killed_builds_mounts_are_unmounted_not_recursed_into(tmp_path):
    """A killed mmdebstrap leaves proc, sysfs and devpts mounted in its tree: prune unmounts
    them before removing it (rmtree inside a mounted file system would reach the host's)."""
    cache, recipe = ImageCache(tmp_path), Recipe.named()
    dead = cache.images / f".{recipe.name}-ffff.tmp-{2**22 + 1}"
    inside = dead / "root" / "mnt"
    inside.mkdir(parents=True)
    keep = tmp_path / "outside"
    keep.mkdir()
    (keep / "precious").write_text("host data")
    subprocess.run(["mount", "--bind", str(keep), str(inside)], check=True)
    try:
        assert prune(recipe, cache) == [dead]
        assert (keep / "precious").read_text() == "host data"
        assert not dead.exists()
    finally:
        subprocess.run(["umount", "--lazy", str(inside)], capture_output=True, check=False)
