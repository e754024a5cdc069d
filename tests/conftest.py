"""Suite-wide: what pytest-xdist must keep together.

tests/unit/intermediate/ stops real host processes, and its session-end guard fails the run if
any process on the machine is left in state T: run on two xdist workers, one worker's guard sees
the processes the other worker's test stopped on purpose. So those tests form one xdist group
(`--dist loadgroup`, as `make test` and the nightly run them): one worker runs all of them."""

import pytest

HOST_PROCESS_TESTS = "tests/unit/intermediate/"


def pytest_collection_modifyitems(items):
    for item in items:
        if item.nodeid.replace("\\", "/").startswith(HOST_PROCESS_TESTS):
            item.add_marker(pytest.mark.xdist_group("intermediate-host-processes"))
