"""A plugin for the child pytest of test_plugin_lifecycle.py's leak test (`-p leak_watch`):
after balloon-harness's end-of-session check (pytest_sessionfinish), before this process
exits and its children die with it, is the QEMU that inner_leak.py left still running?"""

import os
from pathlib import Path


def pytest_unconfigure(config):
    leak = Path(os.environ["BH_LEAK"])
    if leak.exists():
        pid = leak.read_text().strip()
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            state = "gone"
        # A killed child stays a zombie (Z) until pytest reaps it, or exits.
        Path(f"{leak}.at-exit").write_text("dead" if state in ("Z", "X", "gone") else "running")
