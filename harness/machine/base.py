"""What every machine offers, whatever starts it: lifecycle, SSH, balloon, evidence.

A Machine is a context manager. `start()` returns once the guest is *ready* (a command over
SSH works, and cloud-init has finished where cloud-init configures the guest). `stop()`
always leaves nothing running, however the guest behaves.
"""

from __future__ import annotations

import abc
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from harness.accel import Accel
from harness.balloon import Balloon
from harness.config import BootPath, Timeouts, VMSpec
from harness.errors import HarnessError, WaitTimeout, indent
from harness.host.placement import Placement
from harness.image.guest_image import GuestImage, ImageKind
from harness.image.sshkey import HostKey, SshKey
from harness.ssh import GuestShell, SshUnavailable
from harness.waiting import Deadline, wait_for

log = logging.getLogger(__name__)

SERIAL_LOG, CMDLINE, QMP_LOG, PROCESS_LOG = "serial.log", "cmdline.txt", "qmp.jsonl", "qemu.log"
SEED_COPY = "seed-user-data.txt"


@dataclass(frozen=True)
class ProcessMemory:
    """Host memory of a hypervisor process, in MiB, from /proc/PID/status and smaps_rollup.
    rss_anon is its own (private) memory; rss_file counts file pages it maps, which other
    processes mapping the same file (guests restored from one RAM image) share; pss splits
    every shared page between its users, so the PSS of several guests adds up honestly."""

    rss_mib: float
    rss_anon_mib: float
    rss_file_mib: float
    rss_shmem_mib: float
    swap_mib: float
    pss_mib: float | None = None
    pss_anon_mib: float | None = None
    pss_file_mib: float | None = None


def read_process_memory(pid: int) -> ProcessMemory | None:
    def fields(path: str) -> dict[str, float]:
        values = {}
        for line in Path(path).read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB":
                values[key] = int(parts[0]) / 1024
        return values
    try:
        status = fields(f"/proc/{pid}/status")
    except OSError:
        return None
    try:
        rollup = fields(f"/proc/{pid}/smaps_rollup")
    except OSError:  # another user's process without ptrace rights, or an old kernel
        rollup = {}
    return ProcessMemory(rss_mib=status.get("VmRSS", 0.0), rss_anon_mib=status.get("RssAnon", 0.0),
                         rss_file_mib=status.get("RssFile", 0.0), rss_shmem_mib=status.get("RssShmem", 0.0),
                         swap_mib=status.get("VmSwap", 0.0), pss_mib=rollup.get("Pss"),
                         pss_anon_mib=rollup.get("Pss_Anon"), pss_file_mib=rollup.get("Pss_File"))


class PhaseClock:
    """Where a start's seconds went: `mark(name)` books the time since the previous mark.
    The bench reports it as the restore breakdown."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._last = time.monotonic()

    def restart(self) -> None:
        self.phases.clear()
        self._last = time.monotonic()

    def mark(self, name: str) -> None:
        now = time.monotonic()
        self.phases[name] = self.phases.get(name, 0.0) + now - self._last
        self._last = now


class Machine(abc.ABC):
    def __init__(self, spec: VMSpec, image: GuestImage, accel: Accel, key: SshKey,
                 vm_dir: Path) -> None:
        if spec.boot_path is BootPath.LEAN and not image.supports_lean_boot:
            # Cloud images (and the naive bench image) are configured by cloud-init.
            spec = spec.with_(boot_path=BootPath.CLOUD_INIT)
        self.spec = spec
        self.image = image
        self.accel = accel
        self.key = key
        self.vm_dir = vm_dir
        self.timeouts: Timeouts = spec.timeouts_for(accel)
        self.ssh_port: int | None = None
        #: This VM's SSH host key, given to it in its seed. The harness accepts no other key
        #: (a restored guest keeps its saved state's: see known_host_key).
        self.host_key = HostKey.generate()
        self.known_host_key = self.host_key.public_line
        self._ssh: GuestShell | None = None
        self.started_at: float | None = None
        self.ready_at: float | None = None
        self.booted_at: float | None = None
        self.clock = PhaseClock()
        #: Ready also means cloud-init finished, where cloud-init configures the guest. The
        #: bench turns this off to time only "SSH answers" for the naive image.
        self.wait_for_cloud_init = True
        #: Host budget cgroup and evidence folder of a scenario (set by the factory).
        self.placement: Placement | None = None

    # -- what a backend provides ---------------------------------------------------------
    @abc.abstractmethod
    def launch(self) -> None:
        """Start the hypervisor side; set self.ssh_port. Does not wait for the guest."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Stop the guest now and release everything (idempotent, never raises)."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Stop gracefully within the shutdown deadline, then kill."""

    @abc.abstractmethod
    def abort_reason(self) -> str | None:
        """Why waiting for this guest is pointless (exited, crashed, KVM error), or None."""

    @property
    @abc.abstractmethod
    def balloon(self) -> Balloon: ...

    @abc.abstractmethod
    def command_line(self) -> str:
        """The hypervisor command line (or domain XML), for error messages and artifacts."""

    @abc.abstractmethod
    def host_rss_mib(self) -> float | None:
        """Resident memory of the hypervisor process on the host."""

    def host_pid(self) -> int | None:
        """The hypervisor process while it runs (None when unknown or gone)."""
        return None

    def process_memory(self) -> ProcessMemory | None:
        """The hypervisor process's memory split into private and shared (file) pages, and
        its host swap, where the host can see the process."""
        pid = self.host_pid()
        return read_process_memory(pid) if pid else None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def serial_log(self) -> Path:
        return self.vm_dir / SERIAL_LOG

    @property
    def ssh(self) -> GuestShell:
        if self._ssh is None:
            if self.ssh_port is None:
                raise HarnessError(f"{self.name} has not been launched yet.")
            self._ssh = GuestShell(self.name, "127.0.0.1", self.ssh_port, self.image.ssh_user,
                                   self.key, self.known_host_key, self.timeouts.command)
        return self._ssh

    def known_hosts_file(self) -> Path:
        """A known_hosts file with this guest's host key, for OpenSSH's own client."""
        path = self.vm_dir / "known_hosts"
        path.write_text(f"[127.0.0.1]:{self.ssh_port} {self.known_host_key}\n")
        return path

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> Machine:
        self.started_at = time.monotonic()
        self.clock.restart()
        try:
            self.launch()
            self.clock.mark("launch")
            self.wait_ready()
            self.clock.mark("first_command")
            self.after_ready()
            self.clock.mark("fixups")
        except BaseException:
            self.kill()
            raise
        self.ready_at = time.monotonic()
        log.info("%s ready in %.1f s (%s)", self.name, self.ready_at - self.started_at, self.accel.value)
        return self

    def ready_command(self) -> str:
        """The first command over SSH, which proves the guest ready; a backend may fold its
        per-VM fix-ups into it (one round trip fewer)."""
        return "true"

    def after_ready(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Per-VM fix-ups once SSH works that cannot ride on the readiness command."""

    def wait_booted(self, timeout: float | None = None) -> str:
        """Wait until systemd has finished booting (on the lean boot sshd comes first and the
        rest of the boot, swap included, follows). Returns the system state."""
        result = self.ssh.run("systemctl is-system-running --wait", timeout=timeout or self.timeouts.boot,
                              check=False)
        state = result.stdout.strip()
        if state not in ("running", "degraded"):
            failed = self.ssh.run("systemctl --failed --no-legend", check=False).stdout.strip()
            raise HarnessError(f"{self.name} did not finish booting: systemd says {state or result.stderr.strip()!r}."
                               + (f" Failed units:\n{failed}" if failed else ""),
                               fix="read the journal in the VM's artifacts.")
        self.booted_at = time.monotonic()
        return state

    def stop(self) -> None:
        if self._ssh is not None:
            self._ssh.close()
        self.shutdown()

    def __enter__(self) -> Machine:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- readiness ----------------------------------------------------------------------
    def wait_ready(self, timeout: float | None = None) -> None:
        deadline = Deadline(timeout or self.timeouts.boot)

        def ssh_answers() -> bool:
            return self.ssh.try_connect(max(1.0, min(10.0, deadline.remaining())))

        wait_for(ssh_answers, timeout=deadline.remaining(), interval=0.2,
                 what=f"{self.name} to answer SSH on 127.0.0.1:{self.ssh_port}",
                 context=self.failure_context, abort=self.abort_reason,
                 fix="read the serial console tail above; raise the deadline with "
                     "BALLOON_HARNESS_TIMEOUT_SCALE if the host is just slow.")
        self.clock.mark("ssh_connect")
        # Ready means a command works, not only that sshd accepted the key.
        self.ssh.run(self.ready_command(), timeout=max(5.0, deadline.remaining()))
        if self.uses_cloud_init and self.wait_for_cloud_init:
            self._wait_cloud_init(deadline)

    @property
    def uses_cloud_init(self) -> bool:
        return self.image.kind is ImageKind.CLOUD or self.spec.boot_path is BootPath.CLOUD_INIT

    def _wait_cloud_init(self, deadline: Deadline) -> None:
        # status --wait: 0 done, 2 done with recoverable errors, 1 failed.
        result = self.ssh.run("cloud-init status --wait", timeout=max(5.0, deadline.remaining()),
                              check=False)
        if result.exit_status == -1:
            raise WaitTimeout(f"cloud-init to finish in {self.name}", deadline.seconds,
                              context=self.failure_context())
        if result.exit_status not in (0, 2):
            detail = self.ssh.run("cloud-init status --long", check=False).stdout
            raise HarnessError(f"cloud-init failed in {self.name}:\n{detail.strip()}",
                               fix="check the image's cloud-init configuration and the seed "
                                   "(user-data) in the VM's artifacts.")

    # -- evidence -------------------------------------------------------------------------
    def serial_tail(self, lines: int = 40) -> str:
        try:
            text = self.serial_log.read_text(errors="replace")
        except OSError:
            return "(no serial console output)"
        tail = text.replace("\r", "").splitlines()[-lines:]
        return "\n".join(tail) if tail else "(serial console is empty)"

    def failure_context(self) -> str:
        return (f"Serial console ({self.serial_log}), last lines:\n{indent(self.serial_tail())}\n"
                f"Command line:\n{indent(self.command_line())}")

    def collect_artifacts(self, dest: Path) -> Path:
        """Copy the evidence of this VM to `dest`: serial log, command line, QMP traffic,
        hypervisor output and, if the guest still answers, its dmesg and journal."""
        dest.mkdir(parents=True, exist_ok=True)
        for name in (SERIAL_LOG, CMDLINE, QMP_LOG, PROCESS_LOG, SEED_COPY):
            src = self.vm_dir / name
            if src.exists():
                shutil.copy2(src, dest / name)
        (dest / CMDLINE).write_text(self.command_line() + "\n")
        for remote, local in (("dmesg", "dmesg.txt"),
                              ("journalctl -b --no-pager -n 2000", "journal.txt")):
            try:
                if self.ssh_port is None:
                    raise SshUnavailable("never launched")
                result = self.ssh.run(remote, timeout=20, check=False)
                (dest / local).write_text(result.stdout)
            except HarnessError as exc:
                (dest / local).write_text(f"(not collected: {exc})\n")
        return dest

