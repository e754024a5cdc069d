"""Run by tests/vm/test_libvirt_evidence.py in a child pytest on the libvirt backend: how the
guest was started (restored or booted), then a deliberate failure."""

import json
import os
import time


def test_fails_after_start(vm, vm_factory):
    uptime = float(vm.ssh.run("cut -d' ' -f1 /proc/uptime").stdout)
    record = {"backend": vm.spec.backend.value, "restored": getattr(vm, "restored", False),
              "starts": [s.kind for s in vm_factory.starts], "uptime": uptime,
              "since_launch": time.monotonic() - vm.started_at, "domain": vm.domain_name}
    with open(os.environ["BH_REPORT"], "w") as fh:
        json.dump(record, fh)
    vm.ssh.run("echo evidence-from-the-guest > /dev/kmsg")
    raise AssertionError("deliberate failure")
