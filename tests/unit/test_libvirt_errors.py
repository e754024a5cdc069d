"""libvirt connection failures become one clear paragraph with the fix. Both faults are
real: a socket nobody listens on, and an unprivileged user asking for qemu:///system."""

import os
import subprocess
import sys

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


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to an unprivileged user")
def test_permission_denied_names_the_group_or_session_uri():
    if not os.path.exists("/var/run/libvirt/libvirt-sock"):
        pytest.skip("needs a running libvirtd (make test starts one)")
    code = ("import os; os.setgid(65534); os.setuid(65534)\n"
            "from harness.machine.libvirt import connect\n"
            "from harness.errors import HarnessError\n"
            "try:\n    connect('qemu:///system')\nexcept HarnessError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "HOME": "/tmp"}).stdout
    assert "Permission denied on qemu:///system" in out or "authentication" in out.lower(), out
    assert "libvirt' group" in out and "qemu:///session" in out, out
