"""Run the daemon's command line with a fault injected inside its loop (as a script):

    BH_CRASH_TRIGGER=PATH python3 crash_in_loop.py run [options]

Once PATH exists, the daemon's next scan of /proc raises: an exception inside the loop stands
for a bug, which cannot be produced for real without writing one, so it is injected at the
narrowest point (the shell's read of the processes); everything else is the real daemon.
"""

from __future__ import annotations

import os
import sys

from harness.guest.intermediate import observe
from harness.guest.intermediate.cli import main

TRIGGER = os.environ["BH_CRASH_TRIGGER"]
_scan = observe.Observer.scan


def scan(self: observe.Observer, held):  # type: ignore[no-untyped-def]
    if os.path.exists(TRIGGER):
        raise RuntimeError("injected fault: a bug inside the daemon's loop")
    return _scan(self, held)


observe.Observer.scan = scan  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
