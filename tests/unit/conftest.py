"""Fixtures of the fast tests: running harness code as the unprivileged user nobody."""

from unprivileged import nobody_python, shared_tmp  # noqa: F401 - fixtures
