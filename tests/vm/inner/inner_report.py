"""Each test boots a VM and reports what it got, for the parallel-run check."""

import json
import os

import pytest

from harness.runtime import current_run


@pytest.mark.parametrize("n", [1, 2])
def test_report(vm, n):
    out = vm.ssh.run("hostname; cat /etc/machine-id").stdout.split()
    record = {"n": n, "worker": os.environ.get("PYTEST_XDIST_WORKER"), "port": vm.ssh_port,
              "hostname": out[0], "instance": vm.instance_id, "run": str(current_run().path),
              "restored": getattr(vm, "restored", False)}
    with open(os.environ["BH_REPORT"], "a") as fh:
        fh.write(json.dumps(record) + "\n")
