"""Fixtures that spawn real processes and real daemons, and always clean them up.

Every process a test starts carries SPAWN_MARKER in its environment (inherited by whatever it
starts in turn).  After each test every marked process is sent SIGCONT then SIGKILL, and at the
end of the session we fail if any marked process survived or was left in state T (only ours:
other users and test runs on the machine may have theirs stopped).  The daemons under test always run with --scope-pid <pytest's pid>, so they can
only ever see (and stop) processes this test session started.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from harness.guest.intermediate.events import read_events  # noqa: E402
from harness.guest.intermediate.fakepsi import PressureFileWriter  # noqa: E402
from harness.guest.intermediate.procs import cgroup2_mount  # noqa: E402
from harness.guest.intermediate.replay import replay_events  # noqa: E402
from harness.host.cgroup import remove_tree  # noqa: E402
from harness.runtime import process_start_time  # noqa: E402

WORKER = Path(__file__).with_name("worker.py")
SPAWN_MARKER_NAME = "BH_INTERMEDIATE_TEST_SPAWN"
SPAWN_MARKER = f"{SPAWN_MARKER_NAME}={os.getpid()}"
CGROUP2_ROOT = cgroup2_mount()


# == /proc helpers ================================================================================


def proc_stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            text = handle.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def proc_state(pid: int) -> str | None:
    fields = proc_stat_fields(pid)
    return fields[0] if fields else None


def is_alive(pid: int) -> bool:
    return proc_state(pid) not in (None, "Z", "X")


def is_stopped(pid: int) -> bool:
    return proc_state(pid) == "T"


def starttime(pid: int) -> int:
    fields = proc_stat_fields(pid)
    assert fields is not None, f"pid {pid} is gone"
    return int(fields[19])


def marked_pids() -> list[int]:
    found = []
    marker = SPAWN_MARKER.encode()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                if marker in handle.read().split(b"\0"):
                    found.append(int(name))
        except OSError:
            continue
    return found


def stopped_marked_pids() -> list[str]:
    """This session's processes in state T (other users and other test runs may stop theirs)."""
    found = []
    for pid in marked_pids():
        if proc_state(pid) == "T":
            try:
                found.append(f"{pid} {Path(f'/proc/{pid}/cmdline').read_bytes()[:120]!r}")
            except OSError:
                found.append(str(pid))
    return found


def wait_for(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def stays(predicate: Callable[[], object], duration: float, interval: float = 0.02, what: str = "condition") -> None:
    """Assert that predicate() holds at every sample during `duration` seconds."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        assert predicate(), f"{what} stopped holding"
        time.sleep(interval)


def blocked_in_poll(pid: int) -> bool:
    """Is `pid` asleep in poll(2) with no timeout? (x86_64: syscall 7, timeout -1.) The watchdog
    is, once it is ready: it has set its signal dispositions and waits on its parent's pidfd."""
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    return len(fields) > 3 and fields[0] == "7" and int(fields[3], 16) & 0xFFFFFFFF == 0xFFFFFFFF


def kill_marked() -> None:
    """SIGCONT then SIGKILL every process this session spawned; thaw test cgroups first."""
    for cgroup_dir in list(_TEST_CGROUPS):
        try:
            Path(cgroup_dir, "cgroup.freeze").write_text("0")
        except OSError:
            pass
    for _ in range(3):
        pids = marked_pids()
        if not pids:
            break
        for sig in (signal.SIGCONT, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        for popen in list(_POPENS):
            try:
                popen.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 3
        while any(is_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.01)
    _POPENS.clear()


_POPENS: list[subprocess.Popen] = []
_TEST_CGROUPS: list[str] = []


def marked_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("BALLOON_HARNESS_CONTROL", None)
    env[SPAWN_MARKER_NAME] = SPAWN_MARKER.split("=", 1)[1]
    env["PYTHONPATH"] = str(REPO_ROOT)
    if extra:
        env.update(extra)
    return env


def popen_marked(cmd: list[str], *, env_extra: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    kwargs.setdefault("stdout", subprocess.DEVNULL)
    kwargs.setdefault("stderr", subprocess.DEVNULL)
    popen = subprocess.Popen(cmd, env=marked_env(env_extra), **kwargs)
    _POPENS.append(popen)
    return popen


# == session-wide guard ===========================================================================


#: A session's cgroup tree is this prefix and the session's pid (ci/mutation.py's SESSION_CGROUP
#: must match: it sweeps what its test sessions leave).
SESSION_CGROUP_PREFIX = "bh-intermediate-test-"


def _started_at(pid: int) -> float | None:
    """Wall-clock start time of `pid`, or None if it is gone."""
    ticks = process_start_time(pid)
    if ticks is None:
        return None
    btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                 if line.startswith("btime "))
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def dead_session_cgroups() -> list[str]:
    """Cgroup trees of test sessions that are gone (killed before their teardown ran): the name's
    pid is dead, or is a later process that reuses it (started after the tree was made)."""
    if CGROUP2_ROOT is None or not os.path.isdir(CGROUP2_ROOT):
        return []
    dead = []
    for entry in os.scandir(CGROUP2_ROOT):
        pid_text = entry.name.removeprefix(SESSION_CGROUP_PREFIX)
        if not entry.name.startswith(SESSION_CGROUP_PREFIX) or not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        started = _started_at(int(pid_text))
        if started is None or started > entry.stat(follow_symlinks=False).st_ctime + 1:
            dead.append(entry.path)
    return dead


def remove_cgroup_tree(top: str) -> None:
    """Thaw, kill what is inside (test processes of a dead session), remove bottom-up."""
    for dirpath, _dirs, _files in os.walk(top, topdown=False):  # children before parents
        for name, value in (("cgroup.freeze", "0"), ("cgroup.kill", "1")):
            try:
                Path(dirpath, name).write_text(value)
            except OSError:
                pass
    remove_tree(Path(top), timeout=3)


@pytest.fixture(scope="session", autouse=True)
def no_leftovers_at_end() -> Iterator[None]:
    # A session killed by SIGKILL (a CI timeout, a mutation run) never reached its teardown.
    for top in dead_session_cgroups():
        remove_cgroup_tree(top)
    yield
    stopped = stopped_marked_pids()
    kill_marked()
    survivors = [p for p in marked_pids() if is_alive(p)]
    for cgroup_dir in _TEST_CGROUPS:
        try:
            os.rmdir(cgroup_dir)
        except OSError:
            pass
    assert not survivors, f"processes spawned by the tests are still alive: {survivors}"
    assert not stopped, f"processes of this session left in state T: {stopped}"


@pytest.fixture(autouse=True)
def cleanup_processes() -> Iterator[None]:
    yield
    kill_marked()


# == executables and workers ======================================================================


@pytest.fixture(scope="session")
def exe_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bh-intermediate-exe-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def exe_copy(exe_dir: Path) -> Callable[[str], str]:
    """A copy of the Python interpreter under a distinct path: /proc/PID/exe then differs, which
    is how tests control "similar" (same executable + same cgroup)."""

    def make(name: str) -> str:
        target = exe_dir / name
        if not target.exists():
            shutil.copy2(os.path.realpath(sys.executable), target)
        return str(target)

    return make


@dataclass
class Worker:
    popen: subprocess.Popen
    counter: Path | None
    ready: Path
    signal_log: Path | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_ready(self, timeout: float = 10.0) -> Worker:
        wait_for(self.ready.exists, timeout, what=f"worker {self.pid} ready")
        return self

    def count(self) -> int:
        """The worker's progress counter. The worker writes it (0) before it is ready, so a
        read that fails is an error of the test, never a count of 0."""
        assert self.counter is not None, "spawned with counter=False"

        def read() -> int | None:
            try:
                return int(self.counter.read_text())
            except (OSError, ValueError):  # ValueError: read while being rewritten
                return None

        value = wait_for(lambda: (v := read()) is not None and (v,), 2, what=f"a readable counter {self.counter}")
        return value[0]

    def makes_progress(self, timeout: float = 10.0) -> bool:
        """Wait until the counter moves on (a running process); raise if it does not."""
        before = self.count()
        wait_for(lambda: self.count() > before, timeout, what=f"worker {self.pid} making progress")
        return True

    def holds_still(self, window: float = 0.3) -> bool:
        """True if the counter did not move during `window` seconds while the process was alive
        (what a stopped process looks like). A window is the only way to see an absence."""
        before = self.count()
        time.sleep(window)
        assert is_alive(self.pid), f"worker {self.pid} died"
        return self.count() == before

    def child_pids(self) -> list[int]:
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def spawn(workdir: Path, exe_copy: Callable[[str], str]) -> Callable[..., Worker]:
    """spawn(name=..., exe="py-distinct", rss_mb=0, counter=True, ...) -> Worker (ready)."""
    counter_ids = iter(range(10_000))

    def start(
        name: str | None = None,
        *,
        exe: str = "py-distinct",
        script: Path | None = None,
        rss_mb: int = 0,
        counter: bool = True,
        listen: str | None = None,
        no_accept: bool = False,
        connect: str | None = None,
        child: list[str] | None = None,
        signal_log: bool = False,
        env_extra: dict[str, str] | None = None,
        pass_fds: tuple[int, ...] = (),
        new_session: bool = False,
        wait: bool = True,
    ) -> Worker:
        n = next(counter_ids)
        ready = workdir / f"ready-{n}"
        counter_path = workdir / f"counter-{n}" if counter else None
        log_path = workdir / f"signals-{n}" if signal_log else None
        args = [str(script or WORKER), "--ready", str(ready)]
        if name:
            args += ["--name", name]
        if counter_path:
            args += ["--counter", str(counter_path)]
        if rss_mb:
            args += ["--rss-mb", str(rss_mb)]
        if listen:
            args += ["--listen", listen] + (["--no-accept"] if no_accept else [])
        if connect:
            args += ["--connect", connect]
        if child:
            args += ["--child", json.dumps(child)]
        if log_path:
            args += ["--signal-log", str(log_path)]
        popen = popen_marked(
            [exe_copy(exe)] + args, env_extra=env_extra, pass_fds=pass_fds, start_new_session=new_session
        )
        worker = Worker(popen=popen, counter=counter_path, ready=ready, signal_log=log_path)
        return worker.wait_ready() if wait else worker

    return start


def worker_argv(exe: str, workdir: Path, tag: str, name: str, *, counter: bool = True, child: list[str] | None = None) -> tuple[list[str], Path, Path]:
    """Full argv for a worker started by another worker, plus its ready and counter files."""
    ready = workdir / f"ready-{tag}"
    counter_path = workdir / f"counter-{tag}"
    argv = [exe, str(WORKER), "--ready", str(ready), "--name", name]
    if counter:
        argv += ["--counter", str(counter_path)]
    if child:
        argv += ["--child", json.dumps(child)]
    return argv, ready, counter_path


def pid_from_ready(ready: Path, timeout: float = 10.0) -> int:
    wait_for(ready.exists, timeout, what=f"{ready.name}")
    return int(ready.read_text())


# == the pressure file and the daemon =============================================================


@pytest.fixture
def psi(workdir: Path) -> Iterator[PressureFileWriter]:
    writer = PressureFileWriter(str(workdir / "pressure")).start()
    yield writer
    writer.stop()


@dataclass
class DaemonProc:
    popen: subprocess.Popen
    events_path: Path
    control_path: Path
    state_dir: Path
    log_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def events(self, kind: str | None = None) -> list[dict]:
        found = read_events(str(self.events_path))
        return [e for e in found if kind is None or e["event"] == kind]

    def wait_event(self, kind: str, predicate: Callable[[dict], bool] = lambda e: True, timeout: float = 10.0) -> dict:
        def find():
            for event in self.events(kind):
                if predicate(event):
                    return event
            return None

        return wait_for(find, timeout, what=f"event {kind}")

    def holds(self, pid: int) -> dict:
        """Wait until the daemon has stopped `pid` and said so: its stop event, then state T. (Not
        state T alone: a SIGKILL between the signal and the event leaves a decision unlogged.)"""
        event = self.wait_event("stop", lambda e: pid in e["pids"])
        wait_for(lambda: is_stopped(pid), 10, what=f"pid {pid} stopped")
        return event

    def watchdog_ready(self) -> int:
        """The watchdog's pid, once it waits on the daemon (its signal dispositions are set)."""
        pid = self.watchdog_pid()
        wait_for(lambda: blocked_in_poll(pid), 10, what="the watchdog waiting on the daemon")
        return pid

    def decided_at(self, event: dict) -> float:
        """The daemon's own clock (`m` of the input record) at the decision that made `event`:
        each decision's input record is logged before its actions' events."""
        m = None
        for logged in self.events():
            if logged["event"] == "input" and "m" in logged:
                m = logged["m"]
            elif logged == event:
                assert m is not None, f"no input record before {event}"
                return m
        raise AssertionError(f"event not in the log: {event}")

    def decisions(self, n: int, on: Callable[[dict | None], bool], timeout: float = 10.0) -> None:
        """Wait until the daemon has made `n` decisions in a row on readings that satisfy `on`
        (seen through `status`: its last reading, and how many decisions it made)."""
        first: int | None = None

        def done() -> bool:
            nonlocal first
            status = self.status()
            if not on(status["pressure"]):
                first = None
                return False
            first = status["ticks"] if first is None else first
            return status["ticks"] >= first + n

        wait_for(done, timeout, what=f"{n} decisions on the awaited readings")

    def stopped_pids(self) -> list[int]:
        return [p for e in self.events("stop") for p in e.get("pids", [e["pid"]])]

    def resumed_pids(self) -> list[int]:
        return [p for e in self.events("resume") for p in e.get("pids", [e["pid"]])]

    def status(self) -> dict:
        from harness.guest.intermediate.control import request

        return request(str(self.control_path), "status")

    def terminate(self, timeout: float = 10.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout=timeout)

    def watchdog_pid(self) -> int:
        return self.wait_event("start")["watchdog_pid"]

    def log(self) -> str:
        try:
            return self.log_path.read_text()
        except OSError:
            return ""


@pytest.fixture
def start_daemon(workdir: Path, psi: PressureFileWriter, request: pytest.FixtureRequest) -> Callable[..., DaemonProc]:
    """Start `python -m harness.guest.intermediate run` with fast test timings, scoped to our pid."""
    started: list[tuple[DaemonProc, bool]] = []  # (daemon, replayable)
    ids = iter(range(100))

    def start(*extra: str, scope: bool = True, pressure: bool = True, state_dir: Path | None = None, wait: bool = True,
              wrapper: tuple[str, ...] = (), crashes: bool = False, entry: tuple[str, ...] = ("-m", "harness.guest.intermediate"),
              env_extra: dict[str, str] | None = None) -> DaemonProc:
        n = next(ids)
        events_path = workdir / f"events-{n}.jsonl"
        control_path = workdir / f"control-{n}.sock"
        state = state_dir or workdir / f"state-{n}"
        log_path = workdir / f"daemon-{n}.log"
        args = [
            "--state-dir", str(state),
            "--events", str(events_path),
            "--control", str(control_path),
            "--window", "0.5",
            "--stop-interval", "0.3",
            "--hold", "0.5",
            "--rescan-interval", "0.5",
            # The tests' workers are ~10-15 MB Python processes, each meant to be stoppable; the
            # --min-rss rule has tests of its own (test_units.py).
            "--min-rss", "0",
            "--log-level", "DEBUG",
        ]
        if pressure:
            args += ["--pressure-file", psi.path]
        if scope:
            args += ["--scope-pid", str(os.getpid())]
        args += list(extra)
        with open(log_path, "wb") as log_file:
            popen = popen_marked(
                [*wrapper, sys.executable, *entry, "run", *args],
                cwd=str(REPO_ROOT),
                stderr=log_file,
                env_extra=env_extra,
            )
        daemon = DaemonProc(popen, events_path, control_path, state, log_path, args)
        # A daemon made to crash leaves its last decision without its actions: not replayable.
        started.append((daemon, not crashes))
        if wait:
            try:
                wait_for(lambda: daemon.events("start") or daemon.popen.poll() is not None, 10, what="daemon start")
            except AssertionError:
                raise AssertionError(f"daemon did not start:\n{daemon.log()}") from None
            assert daemon.popen.poll() is None, f"daemon exited early:\n{daemon.log()}"
        return daemon

    yield start
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    unreplayable = []
    for daemon, replayable in started:
        if daemon.popen.poll() is None:
            daemon.popen.send_signal(signal.SIGTERM)
            try:
                daemon.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                daemon.popen.kill()
        if failed:
            sys.stderr.write(f"\n--- daemon log {daemon.log_path} ---\n{daemon.log()[-6000:]}\n")
        # Every daemon run of the suite is replayed: the core must re-derive each decision it made.
        report = replay_events(daemon.events()) if replayable else None
        if report is not None and report.differences:
            unreplayable.append(f"{daemon.events_path}:\n{report.table()}")
    assert not unreplayable, "replay differs from the daemon's decisions:\n" + "\n".join(unreplayable)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


# == cgroups ======================================================================================


@pytest.fixture
def test_cgroup() -> Iterator[Callable[[str], str]]:
    """make(name) -> filesystem path of a fresh cgroup v2 directory (removed afterwards)."""
    if CGROUP2_ROOT is None or not os.access(CGROUP2_ROOT, os.W_OK):
        pytest.skip("no writable cgroup2 hierarchy at /sys/fs/cgroup/unified")
    base = os.path.join(CGROUP2_ROOT, f"{SESSION_CGROUP_PREFIX}{os.getpid()}")
    made: list[str] = []

    def make(name: str) -> str:
        if not os.path.isdir(base):
            os.mkdir(base)
            _TEST_CGROUPS.append(base)
            made.append(base)
        path = os.path.join(base, name)
        os.mkdir(path)
        _TEST_CGROUPS.insert(0, path)
        made.append(path)
        if not os.path.exists(os.path.join(path, "cgroup.freeze")):
            pytest.skip("cgroup2 freezer (cgroup.freeze) unavailable")
        return path

    yield make
    kill_marked()
    for path in reversed(made):
        remove_tree(Path(path), timeout=3)
        if path in _TEST_CGROUPS:
            _TEST_CGROUPS.remove(path)


def spawn_with_pid(pid: int, argv: list[str], attempts: int = 50) -> subprocess.Popen | None:
    """Start argv as process `pid` (a recycled pid, for real): ns_last_pid is set just below it
    before the fork. None if other processes keep taking it."""
    for _ in range(attempts):
        if os.path.exists(f"/proc/{pid}"):
            return None
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        popen = popen_marked(argv)
        if popen.pid == pid:
            return popen
        popen.kill()
        popen.wait()
    return None


def set_oom_score_adj(pid: int, value: int) -> bool:
    """Really set /proc/PID/oom_score_adj; False if the kernel refuses (lowering it needs
    CAP_SYS_RESOURCE, which some sandboxes drop even for root)."""
    try:
        fd = os.open(f"/proc/{pid}/oom_score_adj", os.O_WRONLY)
    except OSError:
        return False
    try:
        os.write(fd, str(value).encode())
    except PermissionError:
        return False
    finally:
        os.close(fd)
    return Path(f"/proc/{pid}/oom_score_adj").read_text().strip() == str(value)


def move_to_cgroup(pid: int, cgroup_dir: str) -> None:
    Path(cgroup_dir, "cgroup.procs").write_text(str(pid))


def unix_socket_path(workdir: Path, name: str) -> str:
    path = str(workdir / f"{name}.sock")
    assert len(path) < 100, "sun_path is limited to 108 bytes"
    return path
