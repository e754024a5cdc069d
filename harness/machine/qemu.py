"""The embedded default backend: QEMU started directly, no daemon needed.

Modelled on QEMU's own python/qemu/machine: QMP over a private unix socket on which the
harness listens *before* QEMU starts (QEMU connects; no race), graceful `quit` with a
deadline then SIGKILL, launch errors that carry the command line and QEMU's output. QEMU
gets PR_SET_PDEATHSIG=SIGKILL, so it dies with the process that started it even when that
process is SIGKILLed; `balloon-harness reap` removes the files such a death leaves.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness.accel import TCG_TB_SIZE_MIB, Accel, qemu_accel_args
from harness.balloon import MIB, Balloon, BalloonState, GuestMemoryStats
from harness.config import BootPath, SwapKind, VMSpec
from harness.errors import ConfigError, HarnessError, ImageError, LaunchError
from harness.host.placement import GUEST_PORT_NAME, GUEST_STREAM
from harness.hosttools import require_tool
from harness.image.guest_image import GuestImage, ImageKind
from harness.image.seed import SeedSpec, write_seed_iso
from harness.image.sshkey import HostKey, SshKey
from harness.machine.base import (
    CMDLINE,
    PROCESS_LOG,
    QMP_LOG,
    SEED_COPY,
    SERIAL_LOG,
    Machine,
)
from harness.machine.qmp import QmpConnection, QmpError
from harness.machine.sharedram import RAM_ID, DiscardGuard, RamMode, memory_backend
from harness.machine.snapshot import (
    DEVICE_STATE,
    DISK,
    STATE,
    SavedState,
    save_running,
    set_ignore_shared,
    wait_migration,
)

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
PR_SET_THP_DISABLE = 41
#: QEMU run states after which the guest will never answer SSH.
DEAD_RUNSTATES = {"internal-error", "guest-panicked", "shutdown", "io-error"}


def qemu_binary() -> str:
    return os.environ.get("BALLOON_HARNESS_QEMU") or require_tool("qemu-system-x86_64")


# Loaded in the parent: the child between fork and exec only calls into it (no dlopen there,
# where a thread of the parent may have held the loader's lock at the fork).
_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _child_setup(cgroup_procs: Path | None):
    """What the child does between fork and exec: die with its parent and, with a host
    memory budget, move itself into the budget cgroup (writing "0" moves the writer), so
    that every page QEMU ever touches is charged to the budget and the harness, which
    never joins it, cannot be the host OOM killer's victim."""
    path = os.fsencode(cgroup_procs) if cgroup_procs is not None else None

    def setup() -> None:
        _die_with_parent()
        if path is not None:
            # No transparent huge pages for guest RAM on a budget: the balloon gives back 4 KiB
            # pages, and a huge page given back in part stays charged to the budget until the
            # kernel splits it (measured here: ~300 MiB of two 768 MiB guests' budget went so,
            # and shrinking a balloon gave the budget nothing back). Kept across exec.
            _LIBC.prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
    return setup


@functools.cache
def balloon_properties(binary: str) -> frozenset[str]:
    """The virtio-balloon-pci properties this QEMU knows (QEMU 7.2 has free-page-reporting,
    deflate-on-oom, guest-stats-polling-interval; older ones may lack some)."""
    try:
        out = subprocess.run([binary, "-device", "virtio-balloon-pci,help"], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    return frozenset(m[1] for m in re.finditer(r"^\s+([a-z0-9_-]+)=", out, re.M))


def check_balloon_device(spec: VMSpec, binary: str) -> None:
    wanted = [name for name, on in (("free-page-reporting", spec.balloon.free_page_reporting),
                                    ("deflate-on-oom", spec.balloon.deflate_on_oom)) if on]
    known = balloon_properties(binary)
    missing = [name for name in wanted if known and name not in known]
    if missing:
        raise ConfigError(f"This QEMU ({binary}) has no virtio-balloon property {', '.join(missing)}.",
                          fix="turn the option off in the scenario, or use QEMU >= 5.1 (free-page-reporting).")


@dataclass(frozen=True)
class VmFiles:
    """Everything one VM owns on the host; all of it lives in its run folder."""

    root: Path

    @property
    def overlay(self) -> Path:
        return self.root / "overlay.qcow2"

    @property
    def seed(self) -> Path:
        return self.root / "seed.iso"

    @property
    def qmp_socket(self) -> Path:
        return self.root / "qmp.sock"

    @property
    def serial(self) -> Path:
        return self.root / SERIAL_LOG

    @property
    def pidfile(self) -> Path:
        return self.root / "qemu.pid"

    @property
    def stream(self) -> Path:
        """The guest port's output when the machine has no placement of its own."""
        return self.root / GUEST_STREAM


def create_overlay(base: Path, base_format: str, overlay: Path) -> None:
    """A copy-on-write overlay: the base is opened read-only through it, never written."""
    proc = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", base_format,
                           "-b", str(base.resolve()), str(overlay)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageError(f"Cannot create an overlay on {base}: {proc.stderr.strip()}",
                         fix="check that the base image exists and is readable; rebuild it "
                             "with `balloon-harness image build --force` if it is damaged.")


def prepare_vm_disks(files: VmFiles, base: Path, base_format: str, seed: SeedSpec) -> None:
    """The VM's own overlay on `base` and its NoCloud seed, plus a readable copy of the seed
    for the artifacts."""
    files.root.mkdir(parents=True, exist_ok=True)
    create_overlay(base, base_format, files.overlay)
    write_seed_iso(seed, files.seed)
    (files.root / SEED_COPY).write_text(seed.meta_data() + "---\n" + seed.user_data(redact=True))


#: How HMP `info usernet` lists the SSH forward: the host port chosen for port 0.
SSH_FORWARD = re.compile(r"HOST_FORWARD\]\s+\d+\s+127\.0\.0\.1\s+(\d+)\s+\S+\s+22\b")


def ssh_forward_port(usernet: str) -> int | None:
    match = SSH_FORWARD.search(usernet)
    return int(match[1]) if match else None


def seed_spec_for(spec: VMSpec, image: GuestImage, key: SshKey, instance_id: str,
                  host_key: HostKey) -> SeedSpec:
    swap_mib = spec.swap.size_mib if (image.kind is ImageKind.CLOUD and
                                      spec.swap.kind is SwapKind.FILE) else 0
    return SeedSpec(instance_id=instance_id, hostname=spec.name,
                    authorized_keys=(key.public_line,), swap_file_mib=swap_mib, host_key=host_key)


def kernel_cmdline(spec: VMSpec, image: GuestImage) -> str:
    args = ["console=ttyS0", "root=/dev/vda", "rw", "panic=-1"]
    args += image.lean_cmdline if spec.boot_path is BootPath.LEAN else image.cloud_init_cmdline
    args.append(spec.swap.cmdline())
    args += spec.extra_kernel_args
    return " ".join(args)


def build_argv(spec: VMSpec, image: GuestImage, accel: Accel, files: VmFiles,
               *, incoming: bool = False, ram_image: Path | None = None, ram_private: bool = True,
               stream_file: Path | None = None, tb_size_mib: int | None = None) -> list[str]:
    """`ram_image`: the guest's RAM lives in this file (the template: share=on; a restored
    guest: copy-on-write over it, `ram_private`). Otherwise anonymous RAM. `stream_file`:
    where the guest sampler's port is written (a scenario's run folder; else the VM folder)."""
    shared_template = ram_image is not None and ram_private
    argv = [qemu_binary(), "-name", f"guest={spec.name},debug-threads=on",
            "-machine", f"pc,memory-backend={RAM_ID}", *qemu_accel_args(accel, tb_size_mib or TCG_TB_SIZE_MIB),
            "-smp", str(spec.cpus), "-m", f"{spec.memory_mib}M",
            *memory_backend(spec.memory_mib, ram_image, private=ram_private),
            "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
            "-no-reboot",
            "-chardev", f"socket,id=qmp,path={files.qmp_socket}",
            "-mon", "chardev=qmp,mode=control",
            "-chardev", f"file,id=serial0,path={files.serial}", "-serial", "chardev:serial0"]
    if image.direct_kernel_boot:
        argv += ["-kernel", str(image.kernel), "-initrd", str(image.initrd),
                 "-append", kernel_cmdline(spec, image)]
    # cache=unsafe: the overlay is thrown away with the VM, flushes buy nothing. Over a shared
    # template RAM image the disk never punches holes (see sharedram: its guard fakes them).
    discard = "ignore" if shared_template else "unmap"
    argv += ["-drive", f"if=none,id=disk0,file={files.overlay},format=qcow2,cache=unsafe,discard={discard}",
             "-device", "virtio-blk-pci,drive=disk0" + ("" if image.direct_kernel_boot else ",bootindex=1"),
             "-drive", f"if=none,id=seed0,file={files.seed},format=raw,readonly=on",
             "-device", "virtio-blk-pci,drive=seed0",
             # Port 0: slirp picks a free host port, read back over QMP. No races under xdist.
             "-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:0-:22",
             "-device", "virtio-net-pci,netdev=net0,romfile=",
             "-device", "virtio-balloon-pci,id=balloon0" + spec.balloon.qemu_properties(),
             # The guest sampler's live stream (harness.host.placement): always present, so
             # that every saved state has the same devices.
             "-device", "virtio-serial-pci,id=vser0",
             "-chardev", f"file,id=bhport,append=on,path={_qemu_path(stream_file or files.stream)}",
             "-device", f"virtserialport,bus=vser0.0,chardev=bhport,name={GUEST_PORT_NAME}"]
    if incoming:
        argv += ["-incoming", "defer"]
    argv += list(spec.extra_qemu_args)
    return argv


def machine_signature(spec: VMSpec, image: GuestImage, accel: Accel) -> str:
    """The command line a saved state must be restored with, without the per-VM paths and
    name: part of the saved state's key."""
    return shlex.join(build_argv(spec.with_(name="template"), image, accel, VmFiles(Path("/vm")), incoming=True))


def _qemu_path(path: Path) -> str:
    return str(path).replace(",", ",,")  # a comma ends a QEMU option value unless doubled


class QemuBalloon(Balloon):
    DEVICE = "/machine/peripheral/balloon0"

    def __init__(self, qmp: QmpConnection, max_mib: int) -> None:
        self.qmp = qmp
        self.max_mib = max_mib
        self._target: float | None = None

    def set_target(self, mib: float) -> None:
        self.qmp.execute("balloon", {"value": int(mib * MIB)})
        self._target = float(mib)

    def state(self) -> BalloonState:
        info = self.qmp.execute("query-balloon")
        return BalloonState(actual_mib=info["actual"] / MIB, target_mib=self._target)

    def set_stats_interval(self, seconds: int) -> None:
        self.qmp.execute("qom-set", {"path": self.DEVICE, "property": "guest-stats-polling-interval",
                                     "value": int(seconds)})

    def guest_stats(self) -> GuestMemoryStats:
        raw = self.qmp.execute("qom-get", {"path": self.DEVICE, "property": "guest-stats"})
        stats = raw.get("stats", {})

        def mib(key: str) -> float | None:
            value = stats.get(key, -1)
            return None if value is None or value < 0 else value / MIB

        def count(key: str) -> int | None:
            value = stats.get(key, -1)
            return None if value is None or value < 0 else int(value)

        return GuestMemoryStats(
            total_mib=mib("stat-total-memory"), free_mib=mib("stat-free-memory"),
            available_mib=mib("stat-available-memory"), swapped_in_mib=mib("stat-swap-in"),
            swapped_out_mib=mib("stat-swap-out"), major_faults=count("stat-major-faults"),
            minor_faults=count("stat-minor-faults"), last_update=raw.get("last-update"))


class QemuMachine(Machine):
    def __init__(self, spec: VMSpec, image: GuestImage, accel: Accel, key: SshKey,
                 vm_dir: Path, instance_id: str) -> None:
        super().__init__(spec, image, accel, key, vm_dir)
        self.instance_id = instance_id
        self.files = VmFiles(vm_dir)
        self.process: subprocess.Popen | None = None
        self.qmp: QmpConnection | None = None
        self._balloon: QemuBalloon | None = None
        self._argv: list[str] = []
        #: Set by a restore: the saved guest to load (its state, and its frozen disk under
        #: this VM's overlay) instead of booting, and how its RAM comes back.
        self.saved: SavedState | None = None
        self.ram_mode: RamMode | None = None
        #: Set on the template: boot with the RAM in this file (share=on), to be saved.
        self.template_ram: Path | None = None

    def _ram_args(self) -> dict:
        if self.template_ram is not None:
            return {"ram_image": self.template_ram, "ram_private": False}
        if self.saved is not None and self.ram_mode is RamMode.SHARED:
            return {"ram_image": self.saved.ram_image, "ram_private": True}
        return {}

    def _preexec(self, cgroup_procs: Path | None):
        guard = DiscardGuard() if self.ram_mode is RamMode.SHARED else None
        setup = _child_setup(cgroup_procs)

        def run() -> None:  # in the child, between fork and exec
            setup()
            if guard is not None:
                guard.install()
        return run

    # -- launch -------------------------------------------------------------------------
    def launch(self) -> None:
        base, fmt = (self.saved.disk, "qcow2") if self.saved else (self.image.disk, self.image.disk_format)
        prepare_vm_disks(self.files, base, fmt,
                         seed_spec_for(self.spec, self.image, self.key, self.instance_id, self.host_key))
        check_balloon_device(self.spec, qemu_binary())
        self.clock.mark("disks")
        placement = self.placement
        self._argv = build_argv(self.spec, self.image, self.accel, self.files,
                                incoming=self.restored, **self._ram_args(),
                                stream_file=placement.stream_file(self.name) if placement else None,
                                tb_size_mib=placement.tcg_tb_mib if placement else None)
        (self.vm_dir / CMDLINE).write_text(self.command_line() + "\n")
        self.qmp = QmpConnection(self.name, self.files.qmp_socket, self.vm_dir / QMP_LOG)
        self.qmp.listen()
        with (self.vm_dir / PROCESS_LOG).open("wb") as out:
            try:
                self.process = subprocess.Popen(
                    self._argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    preexec_fn=self._preexec(placement.cgroup_procs if placement else None),
                    start_new_session=True, close_fds=True)
            except OSError as exc:
                raise LaunchError(f"Cannot execute QEMU for {self.name}: {exc}.",
                                  command=self._argv,
                                  fix="install qemu-system-x86 or set BALLOON_HARNESS_QEMU.") from None
        self.files.pidfile.write_text(f"{self.process.pid}\n")
        self._accept_qmp()
        self.clock.mark("qemu_start")
        self._balloon = QemuBalloon(self.qmp, self.spec.memory_mib)
        if self.restored:
            self._load_incoming()
        self.ssh_port = self._read_ssh_port()
        try:
            self._balloon.set_stats_interval(self.spec.balloon_stats_interval_s)
        except QmpError as exc:
            log.warning("%s: cannot enable balloon statistics: %s", self.name, exc)

    def _accept_qmp(self) -> None:
        assert self.qmp is not None and self.process is not None
        try:
            self.qmp.accept(self.timeouts.qmp, alive=lambda: self.process.poll() is None)
        except QmpError as exc:
            if self.process.poll() is not None:
                raise LaunchError(f"QEMU exited with status {self.process.returncode} before "
                                  f"{self.name} started.", command=self._argv,
                                  output=self._process_output(),
                                  fix="read QEMU's message above; `balloon-harness doctor` "
                                      "checks the installation.") from None
            raise LaunchError(f"{exc} (waited {self.timeouts.qmp:.0f} s)", command=self._argv,
                              output=self._process_output()) from None

    def _load_incoming(self) -> None:
        assert self.qmp is not None and self.process is not None and self.saved is not None
        shared = self.ram_mode is RamMode.SHARED
        if shared:
            set_ignore_shared(self.qmp, True)
        self.qmp.execute("migrate-incoming", {"uri": self.saved.incoming_uri(shared)})
        status = wait_migration(self.qmp, self.timeouts.boot, alive=lambda: self.process.poll() is None).get("status")
        self.clock.mark("state_load")
        if status == "completed":
            self.qmp.execute("cont")
            self.clock.mark("cont")
            return
        if status in ("failed", "cancelled") or self.process.poll() is not None:
            raise LaunchError(f"Restoring {self.name} ({self.saved.incoming_uri(shared)}) failed "
                              f"(migration status {status}).", command=self._argv,
                              output=self._process_output(),
                              fix=f"delete the saved state {self.saved.folder} so that the next run "
                                  f"boots afresh (or boot with --vm-fresh-boot).")
        raise LaunchError(f"Restoring {self.name} did not complete in "
                          f"{self.timeouts.boot:.0f} s.", command=self._argv)

    def _read_ssh_port(self) -> int:
        assert self.qmp is not None
        text = self.qmp.hmp("info usernet")
        port = ssh_forward_port(text)
        if port is None:
            raise LaunchError(f"Cannot find the SSH port forward of {self.name} in "
                              f"`info usernet`:\n{text}", command=self._argv)
        return port

    def _process_output(self) -> str:
        try:
            return (self.vm_dir / PROCESS_LOG).read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    # -- state --------------------------------------------------------------------------
    @property
    def balloon(self) -> QemuBalloon:
        if self._balloon is None:
            raise HarnessError(f"{self.name} is not running.")
        return self._balloon

    def command_line(self) -> str:
        return shlex.join(self._argv) if self._argv else "(QEMU not launched yet)"

    def abort_reason(self) -> str | None:
        if self.process is None:
            return "QEMU was never started"
        if self.process.poll() is not None:
            output = self._process_output().strip()
            return (f"QEMU exited with status {self.process.returncode}"
                    + (f": {output[-500:]}" if output else ""))
        try:
            status = self.qmp.execute("query-status", timeout=5)["status"]
        except QmpError:
            return None
        if status in DEAD_RUNSTATES:
            hint = (" (on a KVM host this is the 'KVM internal error' of an unusable /dev/kvm: "
                    "use --vm-accel tcg)" if status == "internal-error" and self.accel is Accel.KVM else "")
            return f"the guest is in QEMU run state {status!r}{hint}"
        return None

    def host_pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def exit_status(self) -> int | None:
        return self.process.poll() if self.process is not None else None

    def host_rss_mib(self) -> float | None:
        memory = self.process_memory()
        return memory.rss_mib if memory else None

    # -- boot once, restore many -------------------------------------------------------
    def restore_from(self, saved: SavedState) -> None:
        """Make the next start() load `saved` instead of booting: map its RAM image or
        stream its full state, whichever it holds. The restored guest's sshd holds the
        saved guest's host key, recorded with the state."""
        self.saved = saved
        self.known_host_key = saved.host_key
        self.ram_mode = RamMode.SHARED if saved.has_shared_ram else RamMode.STREAMED

    @property
    def restored(self) -> bool:
        return self.saved is not None

    def ready_command(self) -> str:
        if not self.restored:
            return "true"
        # The saved guest's clock stopped at the save, its hostname and RNG state are the
        # template's: the readiness command gives this VM its own (the clock is off by the
        # command's one-way latency, tens of milliseconds). The kernel log line marks, on
        # this VM's own serial console, where the restored guest's life begins.
        assert self.ram_mode is not None
        noise = "".join(f"\\{b:03o}" for b in secrets.token_bytes(64))
        # Shell builtins where they will do: every program started right after a restore
        # is translated afresh by TCG.
        return (f"echo {self.name} > /proc/sys/kernel/hostname && echo {self.name} > /etc/hostname && "
                f"printf '{noise}' > /dev/urandom && "
                f"echo '<4>balloon-harness: restored as {self.name} ({self.ram_mode.value} RAM)' > /dev/kmsg && "
                f"date -s @{time.time():.3f} >/dev/null")

    def save_state(self, folder: Path) -> dict:
        """Save this running, ready guest into `folder` (state + frozen disk) and stop QEMU."""
        assert self.qmp is not None and self.process is not None
        # The lean boot is ready (sshd) before the rest of the boot has run; save a guest
        # whose boot has finished, so that restored guests start quiet. Then fewer dirty
        # pages to write, and a quiet disk to freeze.
        self.wait_booted()
        self.ssh.run("sync && echo 3 > /proc/sys/vm/drop_caches", timeout=self.timeouts.boot)
        self.ssh.close()
        # With its RAM in a file, only the devices are saved (x-ignore-shared); otherwise the
        # full stream. (QEMU refuses a second save of a guest paused by a first one.)
        shared = self.template_ram is not None
        state_file = folder / (DEVICE_STATE if shared else STATE)
        seconds = save_running(self.qmp, state_file, self.timeouts.boot, devices_only=shared)
        try:
            self.qmp.execute("quit", timeout=self.timeouts.shutdown)
        except QmpError:
            pass
        self.process.wait(self.timeouts.shutdown)
        shutil.move(self.files.overlay, folder / DISK)
        self.kill()
        meta: dict = {"ram_mode": (RamMode.SHARED if shared else RamMode.STREAMED).value}
        if shared:
            with self.template_ram.open("rb") as ram:
                os.fsync(ram.fileno())  # on disk before the state is published
            st = self.template_ram.stat()
            meta.update(ram_image=[st.st_size, st.st_mtime_ns], ram_image_disk_bytes=st.st_blocks * 512)
        return {"save_seconds": round(seconds, 2), "state_bytes": state_file.stat().st_size,
                "memory_mib": self.spec.memory_mib, "cpus": self.spec.cpus, "swap": str(self.spec.swap),
                "base_image": str(self.image.disk), "host_key": self.known_host_key, **meta}

    # -- stop ---------------------------------------------------------------------------
    def shutdown(self) -> None:
        if self.process is not None and self.process.poll() is None and self.qmp is not None:
            try:
                self.qmp.execute("quit", timeout=self.timeouts.shutdown)
            except QmpError:
                pass  # QEMU may close the socket before answering; the wait below decides
            try:
                self.process.wait(self.timeouts.shutdown)
            except subprocess.TimeoutExpired:
                log.warning("%s did not quit within %.0f s; killing it", self.name,
                            self.timeouts.shutdown)
        self.kill()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
        if self.qmp is not None:
            self.qmp.close()
        for path in (self.files.overlay, self.files.seed, self.files.qmp_socket, self.files.pidfile):
            path.unlink(missing_ok=True)

