"""The harness's SSH login key: made private (0600, a unique temporary name each, O_EXCL) and
refused when loading if anyone else could read or replace it. Real files, and the real
user nobody trying to read them."""

import os
import subprocess

import pytest

from harness.errors import HarnessError
from harness.image.cache import ImageCache
from harness.image.sshkey import ensure_ssh_key


def nobody_can_read(path) -> bool:
    return subprocess.run(["runuser", "-u", "nobody", "--", "cat", str(path)], capture_output=True).returncode == 0


@pytest.fixture
def cache(shared_tmp):
    """A cache where nobody may look around (like a shared CI cache folder)."""
    return ImageCache(shared_tmp / "cache")


def test_leftover_world_readable_temporary_does_not_leak_the_private_key(cache):
    """Reproduced: a 0644 temporary left by an interrupted run became the private key."""
    keys = cache.keys
    for name in ("id_ed25519.tmp", "id_ed25519.pub.tmp"):
        (keys / name).write_text("left over\n")
        (keys / name).chmod(0o644)
    key = ensure_ssh_key(cache)
    assert oct(key.private_path.stat().st_mode & 0o777) == "0o600"
    if os.geteuid() == 0:
        assert not nobody_can_read(key.private_path), "user nobody can read the private key"
        assert nobody_can_read(key.private_path.with_name("id_ed25519.pub"))
    assert key.public_line.startswith("ssh-ed25519 ")


def test_private_key_others_can_read_is_refused_with_the_fix(cache):
    key = ensure_ssh_key(cache)
    key.private_path.chmod(0o644)
    with pytest.raises(HarnessError) as info:
        ensure_ssh_key(cache)
    assert "0644" in str(info.value) and f"chmod 600 {key.private_path}" in info.value.fix


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the key to another user")
def test_private_key_of_another_user_is_refused(cache):
    key = ensure_ssh_key(cache)
    os.chown(key.private_path, 65534, 65534)
    with pytest.raises(HarnessError, match="uid 65534"):
        ensure_ssh_key(cache)


def test_private_key_that_is_a_link_is_refused(cache, tmp_path):
    key = ensure_ssh_key(cache)
    real = tmp_path / "elsewhere"
    key.private_path.rename(real)
    key.private_path.symlink_to(real)
    with pytest.raises(HarnessError, match="link"):
        ensure_ssh_key(cache)


def test_key_folder_reached_through_a_link_is_judged_by_the_folder(cache, tmp_path):
    """A cache whose keys/ is a link to another cache's (as tests share one key) is fine;
    what counts is the folder the link leads to."""
    key = ensure_ssh_key(cache)
    other = ImageCache(tmp_path / "other-cache")
    other.root.mkdir()
    (other.root / "keys").symlink_to(cache.keys)
    assert ensure_ssh_key(other).public_line == key.public_line


def test_key_folder_others_can_write_is_refused(cache):
    ensure_ssh_key(cache)
    cache.keys.chmod(0o777)
    with pytest.raises(HarnessError) as info:
        ensure_ssh_key(cache)
    assert "0777" in str(info.value)


def test_the_loaded_key_is_the_checked_file(cache):
    """What paramiko gets comes from the checked file (no second open by name)."""
    key = ensure_ssh_key(cache)
    assert key.load().get_base64() == key.public_line.split()[1]


def test_unprivileged_user_makes_and_loads_its_own_key(nobody_python, shared_tmp):
    """The same code as user nobody: its key is its own and private, and it loads."""
    code = ("import os, stat\nfrom pathlib import Path\nfrom harness.image.cache import ImageCache\n"
            "from harness.image.sshkey import ensure_ssh_key\n"
            f"key = ensure_ssh_key(ImageCache(Path({str(shared_tmp / 'nobody-cache')!r})))\n"
            "st = os.stat(key.private_path)\nkey.load()\n"
            "print(st.st_uid, oct(stat.S_IMODE(st.st_mode)))\n")
    proc = nobody_python.run(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["65534", "0o600"]
