"""libvirt connection failures become one clear paragraph with the fix. Both faults are
real: a socket nobody listens on, and an unprivileged user asking for qemu:///system."""

import os

import pytest

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is part of the dev install (make venv)")

from harness.errors import HarnessError  # noqa: E402
from harness.machine.libvirt import connect  # noqa: E402


def test_libvirtd_not_running_names_the_command_that_starts_it(tmp_path):
    with pytest.raises(HarnessError) as info:
        connect(f"qemu:///system?socket={tmp_path}/no-libvirtd-here.sock")
    message = str(info.value)
    assert "libvirtd is not running or not reachable" in message
    assert "libvirtd -d && virtlogd -d" in message and "systemctl start libvirtd" in message


@pytest.mark.skipif(not os.path.exists("/run/libvirt/libvirt-sock"),
                    reason="needs a running libvirtd (make unit and make test start one: ci/with-libvirtd.sh)")
def test_unprivileged_user_on_the_system_uri_gets_the_access_fix(nobody_python):
    """A real access failure: user nobody asks for qemu:///system. The harness runs from a
    world-readable copy (nobody may not be able to read this checkout or its venv)."""
    code = ("from harness.machine.libvirt import connect\n"
            "from harness.errors import HarnessError\n"
            "try:\n    connect('qemu:///system')\nexcept HarnessError as e:\n    print(e)\n")
    proc = nobody_python.run(code)
    out = proc.stdout
    assert out.startswith("Permission denied on qemu:///system"), out + proc.stderr
    assert "'libvirt' group" in out and "qemu:///session" in out, out
