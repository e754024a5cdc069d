"""Run by tests/vm/test_plugin_lifecycle.py in a child pytest: two tests look at `shared_vm`, one
fails on purpose (so the session keeps the shared guest's evidence)."""

import json
import os


def record(shared_vm, test: str) -> None:
    boot_id = shared_vm.ssh.run("cat /proc/sys/kernel/random/boot_id").stdout.strip()
    entry = {"test": test, "pid": shared_vm.host_pid(), "instance": shared_vm.instance_id, "boot_id": boot_id,
             "vm_dir": str(shared_vm.vm_dir), "name": shared_vm.name}
    with open(os.environ["BH_REPORT"], "a") as fh:
        fh.write(json.dumps(entry) + "\n")


def test_first_look(shared_vm):
    record(shared_vm, "first")


def test_second_look(shared_vm):
    record(shared_vm, "second")


def test_fails_on_purpose(shared_vm):
    shared_vm.ssh.run("echo shared-guest-evidence > /dev/kmsg")
    raise AssertionError("deliberate failure")
