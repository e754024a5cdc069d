"""ci/with-libvirtd.sh, for real: it starts its own virtlogd and libvirtd when no system
libvirtd answers, keeps them up while the command runs (and cleans up after a Ctrl-C), and
stops exactly those two (by pid) on every way out; other users' processes that merely carry
the same names are neither mistaken for the daemons nor stopped.

The machine's own libvirtd (kept running for everyone) must not be disturbed, so the script
runs in a private mount namespace whose /run, /var/lib/libvirt and /var/log/libvirt are
empty tmpfs and whose /var/cache/libvirt is a folder of this test module: no system
libvirtd answers there (its sockets and pid files are hidden) and nothing the system
libvirtd keeps is shared. Processes and network
interfaces stay shared with the host, so whatever the script leaves behind is visible here.
Where that cannot be arranged (not root, no libvirtd, no mount namespaces) the tests skip,
saying why.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from harness.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "ci" / "with-libvirtd.sh"
HIDDEN = ("/run", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt")
DAEMONS = ("libvirtd", "virtlogd")


def _unusable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (the script starts libvirtd only as root)"
    for tool in ("libvirtd", "virtlogd", "virsh", "unshare"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install libvirt-daemon-system)"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make a private mount namespace here: {probe.stderr.strip()}"
    return None


pytestmark = pytest.mark.skipif(bool(_unusable()), reason=_unusable() or "")


@pytest.fixture(scope="module")
def capabilities_cache(tmp_path_factory) -> Path:
    """libvirtd's QEMU capability cache, shared by this module's private libvirtds (the
    first probes QEMU for ~8 s, the others reuse it) and by nobody else."""
    return tmp_path_factory.mktemp("libvirt-cache")


def start_script(command: str, report: Path, cache: Path, *, autostart_default_network: bool = True) -> subprocess.Popen:
    """The script, in its own session (so a process-group signal reaches exactly it and its
    children), inside the private namespace; `command` (sh) gets REPORT in its environment.
    With `autostart_default_network`, the namespace marks the default network autostarted,
    as a fresh Debian install does: the script must still not bring up virbr0/dnsmasq."""
    setup = [f"mount -t tmpfs bh-test {d}" for d in HIDDEN if d != "/var/cache/libvirt"]
    setup.append(f"mount --bind {cache} /var/cache/libvirt")
    networks = Path("/etc/libvirt/qemu/networks")
    if autostart_default_network and (networks / "default.xml").exists() and (networks / "autostart").is_dir():
        setup.append(f"mkdir -p {report.parent}/autostart && ln -sf {networks}/default.xml {report.parent}/autostart/ "
                     f"&& mount --bind {report.parent}/autostart {networks}/autostart")
    wrapper = " && ".join(setup) + ' && exec "$0" sh -c "$1"'
    return subprocess.Popen(["unshare", "--mount", "--propagation", "private", "bash", "-c", wrapper,
                             str(SCRIPT), command], env={**os.environ, "REPORT": str(report)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


#: What the command reports: whether the script's libvirtd answers, and the script's
#: children (the daemons it started, and the command itself) with their start times (taken
#: here: once the command ends, the script may stop them at once).
REPORT = ('{ virsh -c qemu:///system version >/dev/null 2>&1 && echo answers; '
          'for p in $(cat /proc/$PPID/task/*/children); do '
          'echo "child $p $(cat /proc/$p/comm) $(awk \'{print $22}\' /proc/$p/stat)"; done; '
          '} > "$REPORT.tmp" && mv "$REPORT.tmp" "$REPORT"')


def read_report(report: Path, proc: subprocess.Popen) -> dict[str, tuple[int, int]]:
    """Wait for the command's report; returns {daemon name: (pid, start time)}."""
    wait_for(lambda: report.exists(), timeout=120, what="the command to run under with-libvirtd.sh",
             abort=lambda: proc.poll() is not None and f"the script exited: {proc.stdout.read()}")
    lines = report.read_text().splitlines()
    assert "answers" in lines, f"the script's libvirtd did not answer: {lines}"
    daemons = {}
    for line in lines:
        if line.startswith("child "):
            _, pid, comm, started = line.split()
            if comm in DAEMONS:
                daemons[comm] = (int(pid), int(started))
    assert set(daemons) == set(DAEMONS), f"the script did not start both daemons itself: {lines}"
    return daemons


def start_time(pid: int) -> int | None:
    """The kernel start time of a running process; None once it has exited (zombies too)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


def assert_all_gone(daemons: dict[str, tuple[int, int]]) -> None:
    """Every daemon the script started has exited (a pid now used by a newer process is gone too)."""
    wait_for(lambda: all(start_time(pid) != started for pid, started in daemons.values()),
             timeout=90, what=f"the script's daemons {daemons} to exit")


def dnsmasq_pids() -> set[int]:
    return {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
            and (p / "comm").exists() and _comm(p) == "dnsmasq"}


def _comm(proc_dir: Path) -> str:
    try:
        return (proc_dir / "comm").read_text().strip()
    except OSError:
        return ""


@pytest.fixture
def decoys(shared_tmp):
    """Processes of user nobody named like the daemons: by executable name (what `pkill -x`
    and `pgrep -x` match) and by argv[0] only."""
    procs = []
    for name in DAEMONS:
        link = shared_tmp / name
        link.symlink_to("/bin/sleep")
        procs.append(subprocess.Popen(["runuser", "-u", "nobody", "--", str(link), "300"]))
        procs.append(subprocess.Popen(["runuser", "-u", "nobody", "--", "bash", "-c", f"exec -a {name} sleep 300"]))
    # runuser forks: each decoy is its child, running as nobody, once it has exec'd sleep.
    def started() -> list[int] | None:
        pids = [c for p in procs for c in _children(p.pid) if _uid(c) == 65534 and _is_sleep(c)]
        return pids if len(pids) == len(procs) else None

    pids = wait_for(started, timeout=30, what="nobody's decoys to start")
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for proc in procs:
        proc.wait()


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]
    except OSError:
        return []


def _is_sleep(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/exe").endswith("/sleep")
    except OSError:
        return False


def _uid(pid: int) -> int | None:
    try:
        return Path(f"/proc/{pid}").stat().st_uid
    except OSError:
        return None


@pytest.fixture
def watch(tmp_path, capabilities_cache):
    """Runs one scenario; afterwards checks that nothing the script started is left (and
    kills by pid whatever is, so that a failing test leaves nothing either)."""
    state: dict = {"daemons": {}}
    had_virbr0 = Path("/sys/class/net/virbr0").exists()
    dnsmasq_before = dnsmasq_pids()

    def begin(command: str) -> tuple[subprocess.Popen, dict[str, int]]:
        proc = start_script(command, tmp_path / "report", capabilities_cache)
        state["proc"] = proc
        daemons = read_report(tmp_path / "report", proc)
        state["daemons"] = daemons
        return proc, daemons

    yield begin
    try:
        if state["daemons"]:
            assert_all_gone(state["daemons"])
        wait_for(lambda: not processes_of(tmp_path / "report"), timeout=30,
                 what="the command (and anything it started) to be gone")
        assert dnsmasq_pids() <= dnsmasq_before, "a dnsmasq was left behind"
        if not had_virbr0:
            assert not Path("/sys/class/net/virbr0").exists(), "virbr0 was left behind"
        if "proc" in state:  # the script names its scratch folder after its pid
            leftovers = list(Path("/tmp").glob(f"bh-libvirtd.{state['proc'].pid}.*"))
            assert not leftovers, f"the script left {leftovers}"
    finally:
        for pid, started in state["daemons"].values():
            if start_time(pid) == started:
                os.kill(pid, signal.SIGKILL)
        for pid in processes_of(tmp_path / "report"):
            os.kill(pid, signal.SIGKILL)
        if "proc" in state and state["proc"].poll() is None:
            state["proc"].kill()
            state["proc"].wait()


def processes_of(report: Path) -> list[int]:
    """Processes that carry this scenario's REPORT variable: the command and its children."""
    marker = f"REPORT={report}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def alive(pids: list[int]) -> bool:
    return all(Path(f"/proc/{p}").exists() for p in pids)


def test_normal_exit_stops_what_it_started_and_passes_the_status_on(watch, decoys):
    proc, daemons = watch(REPORT + "; exit 3")
    assert proc.wait(timeout=120) == 3
    assert alive(decoys), "a process of user nobody named like a daemon was stopped"


def test_sigterm_stops_the_command_and_the_daemons(watch, decoys):
    proc, daemons = watch(REPORT + "; exec sleep 300")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    assert alive(decoys)


def test_ctrl_c_lets_the_command_clean_up_with_libvirtd_still_there(watch, tmp_path):
    """SIGINT to the whole process group, as a terminal's Ctrl-C: the command's own clean-up
    (a test session destroying its domains) still finds libvirtd answering; then everything
    stops."""
    cleanup = ('trap \'virsh -c qemu:///system version >/dev/null 2>&1 && echo cleanup-found-libvirtd >> "$REPORT.cleanup"; '
               'kill $!; exit 130\' INT; ' + REPORT + '; sleep 300 & wait')
    proc, daemons = watch(cleanup)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 128 + signal.SIGINT
    assert (tmp_path / "report.cleanup").exists(), "libvirtd was gone before the command's clean-up ran"


def test_sigkill_of_the_script_still_stops_its_daemons_and_command(watch, tmp_path):
    """Nothing can run in the script after SIGKILL: its daemons and its command must go by
    themselves (parent-death signal), and it must have left no files (checked by `watch`)."""
    proc, daemons = watch(REPORT + "; exec sleep 300")
    command = next(p for p in _children(proc.pid) if _comm(Path(f"/proc/{p}")) == "sleep")
    proc.kill()
    proc.wait()
    wait_for(lambda: not Path(f"/proc/{command}").exists() or None, timeout=30,
             what="the command to stop with its SIGKILLed script")


def test_a_system_libvirtd_that_answers_is_used_and_left_alone(tmp_path):
    """Outside the private namespace: the machine's libvirtd answers, so the script starts
    nothing and the daemon is still there afterwards."""
    answers = subprocess.run(["virsh", "-c", "qemu:///system", "version"], capture_output=True).returncode == 0
    pidfile = Path("/run/libvirtd.pid")
    if not answers or not pidfile.exists():
        pytest.skip("no system libvirtd answers on this machine")
    system_pid = int(pidfile.read_text())
    report = tmp_path / "report"
    out = subprocess.run([str(SCRIPT), "sh", "-c", REPORT], env={**os.environ, "REPORT": str(report)},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = report.read_text().splitlines()
    assert "answers" in lines
    assert not [line for line in lines if line.startswith("child ") and line.split()[2] in DAEMONS], lines
    assert Path(f"/proc/{system_pid}").exists(), "the system libvirtd was stopped"
