"""Destroying the libvirt domains of dead runs (and only the harness's own)."""

from __future__ import annotations

import logging

from harness.errors import HarnessError, MissingDependency

log = logging.getLogger(__name__)


def reap_domains(uri: str | None, keep_run_ids: set[str]) -> list[str]:
    try:
        from harness.machine.libvirt import connect, harness_domains
        conn = connect(uri)  # shared: not closed here
    except (MissingDependency, HarnessError) as exc:
        log.info("not reaping libvirt domains: %s", exc)
        return []
    destroyed = []
    for dom, run_id in harness_domains(conn):
        if run_id in keep_run_ids:
            continue
        name = dom.name()
        try:
            persistent = dom.isPersistent()  # a transient domain vanishes once destroyed
            if dom.isActive():
                dom.destroy()
            if persistent:
                dom.undefine()
            destroyed.append(name)
        except Exception as exc:
            log.warning("cannot remove domain %s: %s", name, exc)
    return destroyed
