def test_fails_after_boot(vm):
    vm.ssh.run("echo evidence-from-the-guest > /dev/kmsg")
    raise AssertionError("deliberate failure")
