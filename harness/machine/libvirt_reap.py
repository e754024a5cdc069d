"""Placeholder until the libvirt backend lands: there are no harness domains to reap."""

from __future__ import annotations


def reap_domains(uri: str | None, keep_run_ids: set[str]) -> list[str]:
    return []
