"""Host-side control of the guest's Intermediate daemon: start it in a guest with given
options (through its systemd unit), ask its status, stop it, collect its event log."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

from harness.guest.intermediate.config import FreezeMethod, Thresholds
from harness.guestcode import GUEST_DATA, install_guest_code, read_guest_jsonl
from harness.machine.base import Machine

UNIT = "balloon-intermediate.service"
ENV_FILE = "/etc/balloon-harness/intermediate.env"
# The unit's own paths (guest_images/files/balloon-intermediate.service).
EVENTS = "/var/log/balloon-harness/intermediate-events.jsonl"
STATE_DIR = "/run/balloon-harness/intermediate"
CONTROL = "/run/balloon-harness/intermediate.sock"


@dataclass(frozen=True)
class IntermediateOptions:
    """The daemon's options as the harness passes them (see harness/guest/intermediate)."""

    # The daemon's own defaults, so that a scenario that says nothing means what the daemon means.
    stop_above: float = Thresholds.stop_above
    resume_below: float = Thresholds.resume_below
    hold_s: float = Thresholds.hold
    method: str = FreezeMethod.SIGNAL.value
    protect_cgroups: tuple[str, ...] = ()
    protect_comms: tuple[str, ...] = ()
    #: sftp-server runs under sshd for the harness's file transfers.
    never_stop: tuple[str, ...] = ("sftp-server",)
    #: Where SSH sessions live (lean boot: bh-sshd.service; stock: ssh.service; with logind:
    #: root's session scopes). Processes the harness runs over SSH without detaching them are
    #: its own short control commands; on images whose sshd does not set the marker
    #: (SetEnv in the built image) the cgroup tells.
    never_stop_cgroups: tuple[str, ...] = ("/system.slice/bh-sshd.service", "/system.slice/ssh.service",
                                           "/user.slice/user-0.slice")
    max_stopped_s: float | None = None
    resume_headroom: float | None = None
    resume_reserve_mib: float | None = None
    #: Page a stopped unit out at once (None: the daemon's default, on).
    page_out: bool | None = None
    #: Do not stop a unit smaller than this while a bigger one is stopped (None: the daemon's 16).
    min_rss_mib: float | None = None
    dry_run: bool = False
    extra: tuple[str, ...] = field(default_factory=tuple)

    def argv(self) -> list[str]:
        # --events, --control, --state-dir and --mlock come from the unit itself.
        args = ["--stop-above", str(self.stop_above), "--resume-below", str(self.resume_below),
                "--hold", str(self.hold_s), "--method", self.method]
        for cgroup in self.protect_cgroups:
            args += ["--protect-cgroup", cgroup]
        for comm in self.protect_comms:
            args += ["--protect-comm", comm]
        for comm in self.never_stop:
            args += ["--never-stop", comm]
        for cgroup in self.never_stop_cgroups:
            args += ["--never-stop-cgroup", cgroup]
        if self.max_stopped_s is not None:
            args += ["--max-stopped", str(self.max_stopped_s)]
        if self.resume_headroom is not None:
            args += ["--resume-headroom", str(self.resume_headroom)]
        if self.resume_reserve_mib is not None:
            args += ["--resume-reserve", str(self.resume_reserve_mib)]
        if self.page_out is not None:
            args.append("--page-out" if self.page_out else "--no-page-out")
        if self.min_rss_mib is not None:
            args += ["--min-rss", str(self.min_rss_mib)]
        if self.dry_run:
            args.append("--dry-run")
        return args + list(self.extra)


def start_intermediate(machine: Machine, options: IntermediateOptions) -> None:
    install_guest_code(machine)
    env = f"INTERMEDIATE_ARGS={shlex.join(options.argv())}\n"
    # A fresh event log per start; the state dir is left alone: if a previous daemon
    # crashed, the new one resumes what it lists before anything else.
    machine.ssh.run(f"mkdir -p /etc/balloon-harness {GUEST_DATA} && rm -f {EVENTS}")
    machine.ssh.write_text(ENV_FILE, env)
    machine.ssh.run(f"systemctl reset-failed {UNIT} 2>/dev/null; systemctl start {UNIT}")
    # Started means its control socket answers, not that systemd forked it.
    machine.ssh.run(f"for i in $(seq 100); do [ -S {CONTROL} ] && exit 0; sleep 0.1; done; "
                    f"systemctl status {UNIT} --no-pager; exit 1")


def intermediate_status(machine: Machine, timeout: float | None = None) -> dict:
    out = machine.ssh.run(f"cd /opt/balloon-harness && python3 -m harness.guest.intermediate status "
                          f"--control {CONTROL}", timeout=timeout).stdout
    return json.loads(out)


def stop_intermediate(machine: Machine, timeout: float | None = None) -> None:
    """SIGTERM: the daemon resumes everything it stopped before it exits."""
    machine.ssh.run(f"systemctl stop {UNIT}", timeout=timeout, check=False)


def read_events(machine: Machine) -> list[dict]:
    return read_guest_jsonl(machine, EVENTS)
