"""`balloon-harness boot`: boots, prints how to SSH in (and that works), stops on Ctrl-C."""

import signal
import subprocess
import sys
from pathlib import Path

from harness.waiting import wait_for


def children_named(ppid: int, name: str) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(ppid), "-f", name], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def test_boot_command_prints_a_working_ssh_line_and_stops_on_ctrl_c(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "boot", "--name", "clitest"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        def ssh_line():
            line = proc.stdout.readline()
            lines.append(line)
            return line.strip() if line.strip().startswith("ssh -i") else (proc.poll() is not None and "exited")

        got = wait_for(ssh_line, timeout=600, what="balloon-harness boot to print the ssh command")
        assert got != "exited", "".join(lines)
        argv = got.split() + ["hostname"]
        argv.insert(1, "-oBatchMode=yes")
        assert subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout.strip() == "clitest"
        qemu = children_named(proc.pid, "qemu-system")
        assert len(qemu) == 1, "one QEMU runs for the booted VM"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()  # its QEMU dies with it (PDEATHSIG); never outlive the test
            proc.communicate()
            raise
    assert proc.returncode == 0, "".join(lines) + out
    assert "stopping" in out
    assert not any(p.exists() for p in (Path(f"/proc/{pid}") for pid in qemu)), "QEMU stopped with it"
