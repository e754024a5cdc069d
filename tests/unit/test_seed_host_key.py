"""The guest's host key travels in the NoCloud seed: as cloud-init's `ssh_keys`, in a form
the lean initrd's sed lines (run here, from the recipe's initrd-init, by the host's sh and
sed) turn back into exactly the key files; the artifacts' copy leaves the private key out."""

import subprocess
from pathlib import Path

from harness.image.seed import SeedSpec
from harness.image.sshkey import HostKey

INIT = Path(__file__).resolve().parents[2] / "guest_images/debian-bookworm/initrd-init"


def initrd_host_key_lines() -> str:
    """The initrd's host-key block: from `key=` to its `fi`."""
    lines = INIT.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("key=/newroot/etc/ssh/"))
    end = next(i for i in range(start, len(lines)) if lines[i].strip() == "fi")
    return "\n".join(lines[start:end + 1])


def test_initrd_writes_exactly_the_seeded_host_key(tmp_path):
    host_key = HostKey.generate()
    spec = SeedSpec("i-1", "vm", ("ssh-ed25519 AAAAlogin harness",), host_key=host_key)
    (tmp_path / "seed").mkdir()
    (tmp_path / "seed/user-data").write_text(spec.user_data())
    (tmp_path / "newroot/etc/ssh").mkdir(parents=True)
    script = initrd_host_key_lines().replace("/newroot", str(tmp_path / "newroot")).replace("/seed/", str(tmp_path / "seed") + "/")
    subprocess.run(["sh", "-ec", script], env={"B": "", "PATH": "/usr/bin:/bin"}, check=True)
    key = tmp_path / "newroot/etc/ssh/ssh_host_ed25519_key"
    assert key.read_text() == host_key.private_pem
    assert key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "newroot/etc/ssh/ssh_host_ed25519_key.pub").read_text().strip() == host_key.public_line
    # What sshd would load is that key: ssh-keygen derives the same public key from it.
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True)
    if derived.returncode == 0:
        assert derived.stdout.split()[:2] == host_key.public_line.split()[:2]


def test_the_artifact_copy_of_the_seed_has_no_private_key():
    host_key = HostKey.generate()
    spec = SeedSpec("i-1", "vm", (), host_key=host_key)
    copy = spec.user_data(redact=True)
    assert "PRIVATE KEY" not in copy and host_key.public_line in copy
    assert host_key.private_pem.splitlines()[1] in spec.user_data()
