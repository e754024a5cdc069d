"""A child pytest, for tests of what the plugin does to a whole session (tests/vm/inner/)."""

import os
import subprocess
import sys
from pathlib import Path

INNER = Path(__file__).parent / "inner"


def child_pytest(args, tmp_path, env_extra=None, **popen) -> subprocess.Popen:
    env = {**os.environ, **(env_extra or {})}
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--rootdir={tmp_path}", *args]
    return subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)
