"""Starting guest workloads detached, each as its own transient systemd service (its own
cgroup), and reading their progress and exit status."""

from __future__ import annotations

import enum
import shlex
from dataclasses import dataclass, field

from harness.errors import ConfigError
from harness.guestcode import GUEST_DATA, WORKLOADS, read_guest_jsonl
from harness.machine.base import Machine

# No dash in the slice name: systemd reads dashes in slice names as nesting (a-b.slice
# lives in a.slice), and the cgroup path below must be exact.
SLICE = "bhworkloads.slice"
UNIT_PREFIX = "bh-wl-"


def unit_name(workload: str) -> str:
    """The transient service a workload runs as (its own cgroup under SLICE)."""
    return f"{UNIT_PREFIX}{workload}.service"


class WorkloadKind(enum.Enum):
    MEMHOG = "memhog"
    PROTECTED = "protected"
    STRESS_NG = "stress-ng"


class Role(enum.Enum):
    #: The workload the memory serves: the Intermediate daemon must keep it running.
    PROTECTED = "protected"
    #: Anything else: the daemon may stop it under pressure.
    DISTINCT = "distinct"


SCRIPTS = {WorkloadKind.MEMHOG: "memhog.py", WorkloadKind.PROTECTED: "protected.py",
           WorkloadKind.STRESS_NG: "stressng.py"}

#: Arguments each kind accepts (scenario keys use underscores, the scripts dashes).
ALLOWED_ARGS = {
    WorkloadKind.MEMHOG: {"size_mib": int, "rate_mib_s": float, "hold_s": float, "pause_s": float},
    WorkloadKind.PROTECTED: {"workers": int, "working_set_mib": int, "parent_mib": int, "duration_s": float},
    WorkloadKind.STRESS_NG: {"profile": str, "size_mib": int, "seconds": int},
}


@dataclass(frozen=True)
class WorkloadSpec:
    name: str
    kind: WorkloadKind
    role: Role
    args: dict = field(default_factory=dict)
    start_at_s: float = 0.0

    @property
    def unit(self) -> str:
        return unit_name(self.name)

    @property
    def cgroup(self) -> str:
        return f"/{SLICE}/{self.unit}"

    @property
    def progress_path(self) -> str:
        return f"{GUEST_DATA}/wl-{self.name}.jsonl"

    def argv(self) -> list[str]:
        allowed = ALLOWED_ARGS[self.kind]
        argv = ["python3", f"{WORKLOADS}/{SCRIPTS[self.kind]}", "--name", self.name[:15],
                "--progress", self.progress_path]
        for key, value in self.args.items():
            if key not in allowed:
                raise ConfigError(f"Workload {self.name!r} ({self.kind.value}) has no argument {key!r}.",
                                  fix=f"use one of: {', '.join(sorted(allowed))}.")
            argv += [f"--{key.replace('_', '-')}", str(value)]
        return argv


@dataclass(frozen=True)
class WorkloadStatus:
    name: str
    active_state: str
    result: str
    exit_status: int | None
    main_pid: int | None

    @property
    def finished(self) -> bool:
        return self.active_state in ("inactive", "failed") or (
            self.active_state == "active" and self.main_pid in (None, 0))

    @property
    def succeeded(self) -> bool:
        return self.finished and self.result == "success" and self.exit_status == 0


def start_workload(machine: Machine, spec: WorkloadSpec) -> None:
    """Detached: a transient service with its own cgroup under bhworkloads.slice. systemd-run
    does not pass the caller's environment, so the workload does not inherit the harness's
    never-stop marker: it is an ordinary process to the Intermediate daemon."""
    cmd = ["systemd-run", f"--unit={spec.unit}", f"--slice={SLICE}", "--quiet",
           "-p", "RemainAfterExit=yes",  # keep Result and exit status after it ends
           "-p", f"StandardOutput=append:{GUEST_DATA}/wl-{spec.name}.out",
           "-p", f"StandardError=append:{GUEST_DATA}/wl-{spec.name}.out",
           f"--working-directory={WORKLOADS}", *spec.argv()]
    machine.ssh.run(f"mkdir -p {GUEST_DATA} && rm -f {spec.progress_path} && {shlex.join(cmd)}")


def workload_status(machine: Machine, name: str, timeout: float | None = None) -> WorkloadStatus:
    out = machine.ssh.run(f"systemctl show {unit_name(name)} -p ActiveState -p Result "
                          f"-p ExecMainStatus -p MainPID", timeout=timeout).stdout
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    exit_status = props.get("ExecMainStatus")
    pid = props.get("MainPID")
    return WorkloadStatus(name, props.get("ActiveState", "unknown"), props.get("Result", "unknown"),
                          int(exit_status) if exit_status and exit_status.isdigit() else None,
                          int(pid) if pid and pid.isdigit() else None)


def read_progress(machine: Machine, spec: WorkloadSpec) -> list[dict]:
    return read_guest_jsonl(machine, spec.progress_path)


def stop_all_workloads(machine: Machine, timeout: float | None = None) -> None:
    machine.ssh.run(f"systemctl stop {SLICE}; systemctl reset-failed '{UNIT_PREFIX}*' 2>/dev/null; true",
                    timeout=timeout, check=False)
