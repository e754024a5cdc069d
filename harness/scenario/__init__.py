"""Overcommit scenarios: a TOML description, a runner, and the report comparing runs."""
