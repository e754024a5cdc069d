import os
import time
from pathlib import Path

from harness.runtime import current_run


def test_waits_to_be_killed(vm):
    pid = vm.process.pid if hasattr(vm, "process") else 0
    Path(os.environ["BH_READY"]).write_text(f"{current_run().path}\n{pid}\n")
    time.sleep(600)  # the outer test SIGKILLs this pytest long before
