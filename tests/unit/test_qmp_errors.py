"""A command QEMU refuses becomes a QmpError that names the command, QEMU's error class and its
own words; a real QEMU (machine "none": no guest, starts in a fraction of a second) answers."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from harness.machine.qmp import QmpConnection, QmpError

QEMU = shutil.which("qemu-system-x86_64")


@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")
def test_a_refused_command_is_reported_in_qemus_words():
    # A short folder: the socket path must fit in sun_path.
    with tempfile.TemporaryDirectory(prefix="bh-qmp-") as tmp:
        sock, log = Path(tmp, "qmp.sock"), Path(tmp, "qmp.jsonl")
        qmp = QmpConnection("probe", sock, log)
        qmp.listen()
        qemu = subprocess.Popen([QEMU, "-machine", "none", "-nodefaults", "-display", "none",
                                 "-chardev", f"socket,id=qmp,path={sock}", "-mon", "chardev=qmp,mode=control"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            qmp.accept(30, alive=lambda: qemu.poll() is None)
            assert qmp.execute("query-status")["status"]
            with pytest.raises(QmpError) as info:
                qmp.execute("no-such-command")
            message = str(info.value)
            assert message.startswith("QMP no-such-command failed on probe: CommandNotFound: ")
            assert "no-such-command" in message.split("CommandNotFound: ", 1)[1]
        finally:
            qmp.close()
            qemu.kill()
            qemu.wait()
