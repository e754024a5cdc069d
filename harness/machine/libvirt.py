"""The libvirt backend: the same VM description, run as a transient libvirt domain.

The domain is created with VIR_DOMAIN_START_AUTODESTROY, libvirt's counterpart of
PR_SET_PDEATHSIG: when this process's connection goes away (even by SIGKILL), libvirtd
destroys the domain. Its name carries the harness prefix and the run id, and its
<metadata> records the run, so `balloon-harness reap` can remove leftovers of dead runs and
never touches a domain the harness did not create. The balloon is driven through
virDomainSetMemoryFlags / virDomainMemoryStats, behind the same Balloon interface as QMP.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from harness.accel import TCG_TB_SIZE_MIB, Accel
from harness.balloon import Balloon, BalloonState, GuestMemoryStats
from harness.config import VMSpec
from harness.errors import ConfigError, HarnessError, LaunchError, MissingDependency
from harness.host.placement import GUEST_PORT_NAME
from harness.image.guest_image import GuestImage
from harness.image.sshkey import SshKey
from harness.machine.base import CMDLINE, PROCESS_LOG, Machine
from harness.machine.qemu import VmFiles, kernel_cmdline, prepare_vm_disks, seed_spec_for, ssh_forward_port
from harness.runtime import RUN_PREFIX, Owner, Run

log = logging.getLogger(__name__)

METADATA_NS = "https://balloon-harness.invalid/domain/1"
METADATA_KEY = "bh"


def default_uri() -> str:
    return "qemu:///system" if os.geteuid() == 0 else "qemu:///session"


def domain_name(run_id: str, vm_name: str, counter: int | str = "") -> str:
    return f"{RUN_PREFIX}-{run_id}-{vm_name}" + (f"-{counter}" if counter != "" else "")


def _libvirt():
    try:
        import libvirt
    except ImportError:
        raise MissingDependency("The libvirt backend needs libvirt-python.",
                                fix="apt-get install libvirt-dev pkg-config && pip install libvirt-python "
                                    "(or pip install 'balloon-harness[libvirt]').") from None
    # libvirt prints every error to stderr by default; the harness reports the ones that matter.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt


_shared: dict[tuple[str, int], object] = {}
_shared_lock = threading.Lock()


def connect(uri: str | None):
    """This process's connection to `uri`, opened (and checked) once and shared by every
    machine: each new connection asks libvirtd for its capabilities, which costs seconds
    when libvirtd re-probes QEMU (see ci/with-libvirtd.sh). Domains created with
    AUTODESTROY on it die with this process. Callers must not close it."""
    libvirt = _libvirt()
    key = (uri or default_uri(), os.getpid())  # a forked child opens its own
    with _shared_lock:
        conn = _shared.get(key)
        if conn is not None:
            try:
                if conn.isAlive():
                    return conn
            except libvirt.libvirtError:
                pass
            _shared.pop(key, None)  # libvirtd restarted: open a new one
        conn = open_connection(key[0])
        _shared[key] = conn
        return conn


def open_connection(uri: str | None):
    """A new libvirt connection of the caller's own (to close), turning the usual failures
    into one clear paragraph."""
    libvirt = _libvirt()
    uri = uri or default_uri()
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        message = str(exc)
        lowered = message.lower()
        # Access first: without root, qemu:///system asks polkit over the system bus, and a
        # missing bus also says "No such file or directory".
        if any(k in lowered for k in ("permission denied", "authentication", "polkit", "system bus",
                                      "access denied")):
            raise HarnessError(f"Permission denied on {uri}: {message}",
                               fix="add this user to the 'libvirt' group (then log in again), or use "
                                   "--libvirt-uri qemu:///session.") from None
        if "no such file or directory" in lowered or "connection refused" in lowered:
            fix = ("start it: `libvirtd -d && virtlogd -d` as root on a machine without systemd, "
                   "or `systemctl start libvirtd`.")
            raise HarnessError(f"libvirtd is not running or not reachable at {uri}: {message}", fix=fix) from None
        if "driver" in lowered:
            raise HarnessError(f"libvirt at {uri} has no QEMU driver: {message}",
                               fix="apt-get install libvirt-daemon-driver-qemu (part of "
                                   "libvirt-daemon-system) and restart libvirtd.") from None
        raise HarnessError(f"Cannot connect to libvirt at {uri}: {message}",
                           fix="check `virsh -c {uri} list` works.") from None
    caps = conn.getCapabilities()
    if "<domain type='qemu'" not in caps and '<domain type="qemu"' not in caps:
        conn.close()
        raise HarnessError(f"libvirt at {uri} cannot run QEMU guests (no qemu domain type in its "
                           f"capabilities).", fix="apt-get install qemu-system-x86 and restart libvirtd.")
    return conn


def harness_metadata(run_id: str, vm_name: str, owner: Owner) -> str:
    """Our <metadata> element: the run, the VM, and the owner process the reaper judges by."""
    return (f"<{METADATA_KEY}:harness xmlns:{METADATA_KEY}={quoteattr(METADATA_NS)}><run>{escape(run_id)}</run>"
            f"<vm>{escape(vm_name)}</vm>{owner.to_xml()}</{METADATA_KEY}:harness>")


def domain_xml(name: str, spec: VMSpec, image: GuestImage, accel: Accel, files: VmFiles, run_id: str,
               *, stream_file: Path | None = None, partition: str | None = None,
               tb_size_mib: int | None = None) -> str:
    """The domain for `spec`. User-mode networking with a host port forward is not in
    libvirt's slirp model, so it is passed to QEMU as <qemu:commandline>: the guest sees
    the same fixed addresses (10.0.2.15 via 10.0.2.2) as under the embedded backend. It
    takes the last PCI slot, which libvirt does not hand out before it runs out of others.
    A host memory budget is a resource partition shared by the scenario's domains."""
    dtype = "kvm" if accel is Accel.KVM else "qemu"
    cpu = "<cpu mode='host-passthrough'/>" if accel is Accel.KVM else "<cpu mode='maximum'/>"
    tcg = "" if accel is Accel.KVM else f"<tcg><tb-cache unit='MiB'>{tb_size_mib or TCG_TB_SIZE_MIB}</tb-cache></tcg>"
    if image.direct_kernel_boot:
        os_boot = (f"<kernel>{escape(str(image.kernel))}</kernel><initrd>{escape(str(image.initrd))}</initrd>"
                   f"<cmdline>{escape(kernel_cmdline(spec, image))}</cmdline>")
    else:
        os_boot = "<boot dev='hd'/>"
    balloon = "".join(f" {attr}='on'" for attr, on in (("autodeflate", spec.balloon.deflate_on_oom),
                                                        ("freePageReporting", spec.balloon.free_page_reporting)) if on)
    resource = f"<resource><partition>{escape(partition)}</partition></resource>" if partition else ""
    stream = quoteattr(str(stream_file or files.stream))
    return f"""<domain type='{dtype}' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{escape(name)}</name>{resource}
  <metadata>{harness_metadata(run_id, spec.name, Owner.current())}</metadata>
  <memory unit='MiB'>{spec.memory_mib}</memory>
  <currentMemory unit='MiB'>{spec.memory_mib}</currentMemory>
  <vcpu>{spec.cpus}</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>{os_boot}</os>
  <features><acpi/>{tcg}</features>
  {cpu}
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='unsafe' discard='unmap'/>
      <source file={quoteattr(str(files.overlay))}/><target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file={quoteattr(str(files.seed))}/><target dev='vdb' bus='virtio'/><readonly/>
    </disk>
    <serial type='file'><source path={quoteattr(str(files.serial))}/><target port='0'/></serial>
    <console type='file'><source path={quoteattr(str(files.serial))}/><target type='serial' port='0'/></console>
    <memballoon model='virtio'{balloon}><stats period='{spec.balloon_stats_interval_s}'/></memballoon>
    <channel type='file'><source path={stream} append='on'/><target type='virtio' name='{GUEST_PORT_NAME}'/></channel>
    <video><model type='none'/></video>
  </devices>
  <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>
  <qemu:commandline>
    <qemu:arg value='-netdev'/><qemu:arg value='user,id=bhnet0,hostfwd=tcp:127.0.0.1:0-:22'/>
    <qemu:arg value='-device'/><qemu:arg value='virtio-net-pci,netdev=bhnet0,romfile=,bus=pci.0,addr=0x1f'/>
  </qemu:commandline>
</domain>
"""


class LibvirtBalloon(Balloon):
    def __init__(self, domain, max_mib: int) -> None:
        self.domain = domain
        self.max_mib = max_mib
        self._target: float | None = None
        self._libvirt = _libvirt()

    def set_target(self, mib: float) -> None:
        self.domain.setMemoryFlags(int(mib * 1024), self._libvirt.VIR_DOMAIN_AFFECT_LIVE)
        self._target = float(mib)

    def state(self) -> BalloonState:
        stats = self.domain.memoryStats()
        actual = stats.get("actual", self.domain.info()[2])
        return BalloonState(actual_mib=actual / 1024, target_mib=self._target)

    def set_stats_interval(self, seconds: int) -> None:
        self.domain.setMemoryStatsPeriod(int(seconds), self._libvirt.VIR_DOMAIN_AFFECT_LIVE)

    def guest_stats(self) -> GuestMemoryStats:
        stats = self.domain.memoryStats()

        def mib(key: str) -> float | None:
            return stats[key] / 1024 if key in stats else None

        # libvirt's names: "available" is the guest's MemTotal, "usable" its MemAvailable.
        return GuestMemoryStats(
            total_mib=mib("available"), free_mib=mib("unused"), available_mib=mib("usable"), swapped_in_mib=mib("swap_in"), swapped_out_mib=mib("swap_out"),
            major_faults=stats.get("major_fault"), minor_faults=stats.get("minor_fault"),
            last_update=stats.get("last_update"))


class LibvirtMachine(Machine):
    def __init__(self, spec: VMSpec, image: GuestImage, accel: Accel, key: SshKey, vm_dir: Path,
                 instance_id: str, *, run: Run, uri: str | None = None) -> None:
        super().__init__(spec, image, accel, key, vm_dir)
        self.instance_id = instance_id
        self.run = run
        self.uri = uri or default_uri()
        self.files = VmFiles(vm_dir)
        self.domain_name = domain_name(run.run_id, vm_dir.name)
        self.conn = None  # this process's shared connection (never closed here)
        self.domain = None
        self._xml = ""
        self._balloon: LibvirtBalloon | None = None

    def launch(self) -> None:
        libvirt = _libvirt()
        prepare_vm_disks(self.files, self.image.disk, self.image.disk_format,
                         seed_spec_for(self.spec, self.image, self.key, self.instance_id, self.host_key))
        placement = self.placement
        self._xml = domain_xml(self.domain_name, self.spec, self.image, self.accel, self.files, self.run.run_id,
                               stream_file=placement.stream_file(self.name) if placement else None,
                               partition=placement.libvirt_partition if placement else None,
                               tb_size_mib=placement.tcg_tb_mib if placement else None)
        (self.vm_dir / "domain.xml").write_text(self._xml)
        self.conn = connect(self.uri)
        if self.spec.balloon.free_page_reporting and self.conn.getLibVersion() < 6_009_000:
            raise ConfigError("This libvirt is older than 6.9 and has no <memballoon freePageReporting>.",
                              fix="turn free_page_reporting off for libvirt guests, or use the qemu backend.")
        try:
            # AUTODESTROY: libvirtd destroys the domain when this connection closes, which
            # includes this process dying.
            self.domain = self.conn.createXML(self._xml, libvirt.VIR_DOMAIN_START_AUTODESTROY)
        except libvirt.libvirtError as exc:
            raise LaunchError(f"libvirt refused to start {self.domain_name}: {exc}",
                              command=["<domain XML>", self._xml], output=self._qemu_log(),
                              fix="read libvirt's message above; `virsh -c "
                                  f"{self.uri} capabilities` shows what this host supports.") from None
        self._balloon = LibvirtBalloon(self.domain, self.spec.memory_mib)
        self.ssh_port = self._read_ssh_port()
        try:
            self._balloon.set_stats_interval(self.spec.balloon_stats_interval_s)
        except libvirt.libvirtError as exc:
            log.warning("%s: cannot set the balloon stats period: %s", self.name, exc)

    def _read_ssh_port(self) -> int:
        import libvirt_qemu
        deadline = time.monotonic() + self.timeouts.qmp
        while True:
            text = libvirt_qemu.qemuMonitorCommand(self.domain, "info usernet",
                                                   libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
            port = ssh_forward_port(text)
            if port is not None:
                return port
            if time.monotonic() > deadline:
                raise LaunchError(f"Cannot find the SSH forward of {self.domain_name} in `info usernet`:\n{text}",
                                  command=["<domain XML>", self._xml])
            time.sleep(0.1)  # slirp sets up forwards as QEMU starts

    def _qemu_log(self, tail: int | None = 4000) -> str:
        path = Path(f"/var/log/libvirt/qemu/{self.domain_name}.log")
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-tail:] if tail else text

    @property
    def balloon(self) -> LibvirtBalloon:
        if self._balloon is None:
            raise HarnessError(f"{self.name} is not running.")
        return self._balloon

    def command_line(self) -> str:
        """The QEMU command line libvirt used (from its per-domain log); the domain XML is
        saved with the artifacts."""
        if not self._xml:
            return "(domain not defined yet)"
        lines = self._qemu_log(tail=None).splitlines()
        starts = [i for i, line in enumerate(lines) if line.startswith("LC_ALL=")]
        command = []
        for line in lines[starts[-1]:] if starts else []:
            command.append(line.rstrip("\\ ").strip())
            if not line.endswith("\\"):
                break
        qemu = " ".join(command) if command else "(QEMU command line not logged yet)"
        return f"libvirt domain {self.domain_name} on {self.uri}: {qemu}"

    def abort_reason(self) -> str | None:
        libvirt = _libvirt()
        if self.domain is None:
            return "the domain was never started"
        try:
            state, reason = self.domain.state()
        except libvirt.libvirtError as exc:
            return f"the domain is gone ({exc})"
        if state in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED):
            return f"the domain stopped (libvirt state {state}, reason {reason})"
        if state == libvirt.VIR_DOMAIN_PAUSED and reason in (libvirt.VIR_DOMAIN_PAUSED_CRASHED,
                                                              libvirt.VIR_DOMAIN_PAUSED_IOERROR):
            return f"the guest is paused after an error (reason {reason})"
        return None

    def host_pid(self) -> int | None:
        """QEMU's pid, from the pid file libvirtd writes (root's qemu:///system)."""
        try:
            pid = int(Path(f"/run/libvirt/qemu/{self.domain_name}.pid").read_text())
        except (OSError, ValueError):
            return None
        return pid if self.domain is not None and Path(f"/proc/{pid}").exists() else None

    def host_rss_mib(self) -> float | None:
        try:
            rss = self.domain.memoryStats().get("rss") if self.domain is not None else None
        except Exception:
            return None
        return rss / 1024 if rss else None

    def collect_artifacts(self, dest: Path) -> Path:
        super().collect_artifacts(dest)
        (dest / "domain.xml").write_text(self._xml)
        (dest / PROCESS_LOG).write_text(self._qemu_log())
        (dest / CMDLINE).write_text(self.command_line() + "\n")
        return dest

    def shutdown(self) -> None:
        libvirt = _libvirt()
        if self.domain is not None:
            try:
                # SIGTERM to QEMU (an orderly exit), then SIGKILL if it lingers.
                self.domain.destroyFlags(libvirt.VIR_DOMAIN_DESTROY_GRACEFUL)
            except libvirt.libvirtError:
                pass
        self.kill()

    def kill(self) -> None:
        libvirt = _libvirt()
        if self.domain is not None:
            try:
                self.domain.destroy()
            except libvirt.libvirtError:
                pass  # already gone
            self.domain = None
        self.conn = None
        for path in (self.files.overlay, self.files.seed):
            path.unlink(missing_ok=True)


@dataclass(frozen=True)
class HarnessDomain:
    domain: object
    run_id: str
    #: None for a domain made by a harness that did not record its owner yet.
    owner: Owner | None


def harness_domains(conn) -> list[HarnessDomain]:
    """Every domain this harness created on `conn`: the name prefix AND our metadata must
    both be there, so no foreign domain is ever touched."""
    libvirt = _libvirt()
    found = []
    for dom in conn.listAllDomains():
        if not dom.name().startswith(f"{RUN_PREFIX}-"):
            continue
        try:
            meta = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0)
        except libvirt.libvirtError:
            continue  # no harness metadata: not ours
        match = re.search(r"<run>([^<]+)</run>", meta)
        if match:
            found.append(HarnessDomain(dom, match[1], Owner.from_xml(meta)))
    return found
