"""Destroying the libvirt domains of dead runs (and only the harness's own).

A domain is removed only when its owner (recorded in its metadata: pid, start time, boot,
uid, runtime folder) is a harness process of this host's current boot, of this user and
this runtime folder, and is dead. A domain made by another user, another CI job (its own
runtime folder), another host sharing the libvirtd, or a live process is never touched. A
domain without an owner record (made by an older harness) is removed only when its run id
names a run folder here whose owner is dead; otherwise it is left and listed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from harness.errors import HarnessError, MissingDependency
from harness.runtime import Owner

log = logging.getLogger(__name__)


@dataclass
class DomainVerdicts:
    destroyed: list[str] = field(default_factory=list)
    #: (domain name, why it was left alone)
    kept: list[tuple[str, str]] = field(default_factory=list)


def why_keep(run_id: str, owner: Owner | None, here: Owner, dead_run_ids: set[str]) -> str | None:
    """None if the domain may be removed; otherwise why it must be left alone."""
    if owner is None:
        if run_id in dead_run_ids:
            return None
        return "no owner record (made by an older harness) and no dead run of that id here"
    if reason := owner.not_judgeable_from(here):
        return reason
    if owner.alive():
        return f"its owner (pid {owner.pid}) is alive"
    return None


def reap_domains(uri: str | None, dead_run_ids: set[str]) -> DomainVerdicts:
    verdicts = DomainVerdicts()
    try:
        from harness.machine.libvirt import connect, harness_domains
        conn = connect(uri)  # shared: not closed here
    except (MissingDependency, HarnessError) as exc:
        log.info("not reaping libvirt domains: %s", exc)
        return verdicts
    here = Owner.current()
    for found in harness_domains(conn):
        dom = found.domain
        name = dom.name()
        if reason := why_keep(found.run_id, found.owner, here, dead_run_ids):
            verdicts.kept.append((name, reason))
            continue
        try:
            persistent = dom.isPersistent()  # a transient domain vanishes once destroyed
            if dom.isActive():
                dom.destroy()
            if persistent:
                dom.undefine()
            verdicts.destroyed.append(name)
        except Exception as exc:
            log.warning("cannot remove domain %s: %s", name, exc)
    return verdicts
