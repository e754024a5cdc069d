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
@pytest.mark.skipif(not os.path.exists("/run/libvirt/libvirt-sock"),
                    reason="needs a running libvirtd (make unit and make test start one: ci/with-libvirtd.sh)")
def test_unprivileged_user_on_the_system_uri_gets_the_access_fix():
    """A real access failure: user nobody asks for qemu:///system. (The system python runs it:
    this venv's interpreter may live under /root, which nobody cannot read.)"""
    system_python = "/usr/bin/python3"
    probe = subprocess.run([system_python, "-c", "import sys; print(sys.version_info[:2])"],
                           capture_output=True, text=True)
    if probe.returncode != 0 or probe.stdout.strip() != str(sys.version_info[:2]):
        pytest.skip("needs a system python3 of this venv's version")
    site = next(p for p in sys.path if p.endswith("site-packages"))
    code = ("from harness.machine.libvirt import connect\n"
            "from harness.errors import HarnessError\n"
            "try:\n    connect('qemu:///system')\nexcept HarnessError as e:\n    print(e)\n")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run(["runuser", "-u", "nobody", "--", "env", f"PYTHONPATH={repo}:{site}", system_python,
                          "-c", code], capture_output=True, text=True, timeout=60, cwd="/tmp").stdout
    assert out.startswith("Permission denied on qemu:///system"), out
    assert "'libvirt' group" in out and "qemu:///session" in out, out
