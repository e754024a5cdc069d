"""Run by tests/vm/test_plugin_lifecycle.py in a child pytest: a test that passes but leaves
its QEMU running (a factory nobody closes), for the plugin's end-of-session check."""

import os
from pathlib import Path


def test_leaves_a_qemu_behind(vm_session):
    machine = vm_session.factory().start(name="leaked")  # never closed, on purpose
    Path(os.environ["BH_LEAK"]).write_text(str(machine.host_pid()))
