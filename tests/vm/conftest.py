"""Every test in tests/vm boots real guests."""

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/vm/" in item.nodeid.replace("\\", "/"):
            item.add_marker(pytest.mark.vm)
