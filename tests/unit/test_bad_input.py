"""Bad input gets one clear paragraph naming the fix, never a traceback from deep inside."""

import os
import subprocess
import sys

import pytest


def run_cli(*args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def test_missing_image(tmp_path):
    proc = run_cli("boot", "--image", str(tmp_path / "absent.qcow2"))
    assert proc.returncode == 2
    assert "does not exist" in proc.stdout and "Fix:" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_missing_qemu_binary():
    proc = run_cli("boot", env_extra={"BALLOON_HARNESS_QEMU": "/nonexistent/qemu-system-x86_64"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Cannot execute QEMU" in out and "install qemu-system-x86" in out
    assert "Traceback" not in out


def test_qemu_that_exits_at_once_reports_command_line():
    # A QEMU binary that exits before connecting to QMP (here /bin/false stands in for it).
    proc = run_cli("boot", env_extra={"BALLOON_HARNESS_QEMU": "/bin/false"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "QEMU exited with status 1" in out and "Command line:" in out and "/bin/false" in out
    assert "Traceback" not in out


def test_corrupt_image(tmp_path):
    bad = tmp_path / "bad.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(bad), "64M"], check=True)
    data = bytearray(bad.read_bytes())
    data[0x28:0x30] = b"\xff" * 8  # the L1 table offset now points far beyond the file
    bad.write_bytes(bytes(data))
    proc = run_cli("boot", "--image", str(bad))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "download the image again" in out and "Fix:" in out, out
    assert "Traceback" not in out


def test_unusable_kvm_requested_explicitly():
    from harness.accel import probe_kvm
    if probe_kvm().usable:
        # The fake-host cases of resolve() are in test_accel.py; here it is the real command line.
        pytest.skip("KVM is usable on this host: an unusable KVM cannot be requested here")
    proc = run_cli("boot", "--accel", "kvm")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "KVM was requested but cannot be used" in out and "--vm-accel tcg" in out
