"""balloon-harness: boot real QEMU guests from pytest and prove what memory overcommit does.

This file must import nothing outside the Python standard library: the same package path
(`harness.guest.intermediate`) is copied into guests that only have Debian's python3.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Imported lazily: the scenario model needs third-party packages the guest does not have.
    if name == "ScenarioError":
        from harness.scenario.model import ScenarioError
        return ScenarioError
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
