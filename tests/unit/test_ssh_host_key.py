"""The harness's SSH client talks only to the host key it gave the guest: against a real SSH
server (tests/unit/sshserver.py) on 127.0.0.1, the right key gets a command through and any
other key is refused at once (not retried until the boot deadline)."""

import io

import paramiko
import pytest
from sshserver import ssh_server

from harness.image.cache import ImageCache
from harness.image.sshkey import HostKey, ensure_ssh_key
from harness.ssh import GuestShell, HostKeyMismatch, fingerprint


@pytest.fixture
def login_key(tmp_path):
    return ensure_ssh_key(ImageCache(tmp_path / "cache"))


def server_key(host_key: HostKey) -> paramiko.PKey:
    return paramiko.Ed25519Key.from_private_key(io.StringIO(host_key.private_pem))


def test_the_guests_own_host_key_is_accepted(login_key):
    guest = HostKey.generate()
    with ssh_server(server_key(guest), login_key.public_line.split()[1]) as port:
        shell = GuestShell("vm", "127.0.0.1", port, "root", login_key, guest.public_line, 10)
        try:
            assert shell.try_connect(5)
            assert "hostname" in shell.run("hostname").stdout
        finally:
            shell.close()


def test_a_wrong_host_key_is_refused_at_once(login_key):
    """An impostor (any other key) gets no command, and the refusal names both keys."""
    guest, impostor = HostKey.generate(), HostKey.generate()
    with ssh_server(server_key(impostor), login_key.public_line.split()[1]) as port:
        shell = GuestShell("vm", "127.0.0.1", port, "root", login_key, guest.public_line, 10)
        with pytest.raises(HostKeyMismatch) as info:
            shell.try_connect(5)  # raises: readiness polling must not retry this
    message = str(info.value)
    assert fingerprint(server_key(impostor)) in message
    assert fingerprint(server_key(guest)) in message and "Fix:" in message
