"""The runtime folder belongs to us or is not used: another local user who creates it first
(with a planted symlink, or just loose permissions) must not steer what root deletes or
which QMP socket a root QEMU talks to. Real users (root and nobody), real files and links."""

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.reaper import reap
from harness.runtime import all_runs, current_run, runtime_root

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user (nobody)")


def as_nobody(script: str) -> None:
    subprocess.run(["runuser", "-u", "nobody", "--", "sh", "-ec", script], check=True, cwd="/tmp")


@pytest.fixture
def victim(tmp_path):
    """A stand-in for /etc: folders root owns and must never lose."""
    folder = tmp_path / "etc-standin"
    for name in ("ssh", "libvirt", "apt"):
        (folder / name).mkdir(parents=True)
        (folder / name / "keep.conf").write_text("precious\n")
    return folder


@pytest.fixture
def short_tmp():
    """A folder with a short path: VM folders under pytest's tmp_path (with xdist's popen-gwN)
    can be too deep for a unix socket, which the harness refuses."""
    path = Path(tempfile.mkdtemp(prefix="bh-t-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def intact(folder: Path) -> bool:
    return all((folder / n / "keep.conf").read_text() == "precious\n" for n in ("ssh", "libvirt", "apt"))


def reap_cli(runtime: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "reap", "--no-libvirt"],
                          env={**os.environ, "BALLOON_HARNESS_RUNTIME": str(runtime)},
                          capture_output=True, text=True, timeout=120)


def test_planted_runs_link_does_not_make_root_delete_elsewhere(shared_tmp, victim):
    """The reproduced attack: nobody creates the runtime folder first, with runs -> /etc."""
    runtime = shared_tmp / "runtime"
    as_nobody(f"mkdir -m 755 {runtime} && ln -s {victim} {runtime}/runs")
    proc = reap_cli(runtime)
    assert intact(victim), "root's reap deleted folders through nobody's symlink"
    assert proc.returncode != 0
    out = " ".join((proc.stdout + proc.stderr).split())  # rich wraps long lines
    assert f"{runtime} belongs to uid 65534" in out and "Fix:" in out, out


def test_runtime_folder_of_another_user_is_refused(shared_tmp):
    runtime = shared_tmp / "runtime"
    as_nobody(f"mkdir -m 700 {runtime}")
    os.environ["BALLOON_HARNESS_RUNTIME"] = str(runtime)
    try:
        with pytest.raises(HarnessError) as info:
            runtime_root()
    finally:
        del os.environ["BALLOON_HARNESS_RUNTIME"]
    assert "uid 65534" in str(info.value) and "BALLOON_HARNESS_RUNTIME" in info.value.fix


def test_our_folder_with_loose_mode_is_refused(tmp_path, monkeypatch):
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    runtime.chmod(0o777)
    monkeypatch.setenv("BALLOON_HARNESS_RUNTIME", str(runtime))
    with pytest.raises(HarnessError) as info:
        runtime_root()
    assert "0777" in str(info.value) and f"chmod 700 {runtime}" in info.value.fix


def test_runtime_folder_given_as_a_symlink_is_refused(tmp_path, monkeypatch):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "runtime"
    link.symlink_to(real)
    monkeypatch.setenv("BALLOON_HARNESS_RUNTIME", str(link))
    with pytest.raises(HarnessError, match="symbolic link"):
        runtime_root()


def test_folder_inside_one_another_user_can_write_is_refused(shared_tmp, monkeypatch):
    """nobody owns the parent: it could rename our folder away and put its own in place."""
    parent = shared_tmp / "nobodys"
    as_nobody(f"mkdir -m 755 {parent}")
    monkeypatch.setenv("BALLOON_HARNESS_RUNTIME", str(parent / "runtime"))
    with pytest.raises(HarnessError) as info:
        runtime_root()
    assert str(parent) in str(info.value) and "uid 65534" in str(info.value)


def test_links_inside_our_folder_are_never_followed(tmp_path, monkeypatch, victim):
    """Defence in depth: a run entry or a VM folder that is a symlink is neither listed nor
    followed when removing."""
    monkeypatch.setenv("BALLOON_HARNESS_RUNTIME", str(tmp_path / "runtime"))
    runs = runtime_root() / "runs"
    runs.mkdir()
    (runs / "4242link").symlink_to(victim)
    dead = runs / "4243dead"
    (dead / "vms").mkdir(parents=True)
    (dead / "vms" / "vm-1").symlink_to(victim)
    assert [r.run_id for r in all_runs()] == ["4243dead"]
    reap(include_libvirt=False)
    assert intact(victim)


def test_created_folders_are_ours_and_private(short_tmp, monkeypatch):
    monkeypatch.setenv("BALLOON_HARNESS_RUNTIME", str(short_tmp / "runtime"))
    run = current_run()
    for path in (runtime_root(), run.path.parent, run.path, run.vm_dir("vm-1")):
        st = path.lstat()
        assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
        assert stat.S_IMODE(st.st_mode) == 0o700, (path, oct(st.st_mode))


def test_unprivileged_user_gets_its_own_private_runtime(nobody_python, shared_tmp):
    """Everything keeps working for a non-root user: nobody makes and uses its own folder."""
    runtime = shared_tmp / "nobody-runtime"
    code = ("import os, stat\nfrom harness.runtime import current_run, runtime_root\n"
            "run = current_run(); vm = run.vm_dir('vm-1')\n"
            "for p in (runtime_root(), run.path, vm):\n"
            "    st = os.lstat(p); print(st.st_uid, oct(stat.S_IMODE(st.st_mode)))\n")
    proc = nobody_python.run(code, env={"BALLOON_HARNESS_RUNTIME": str(runtime)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == ["65534 0o700"] * 3, proc.stdout


def test_a_changed_runtime_folder_gets_a_run_of_its_own(tmp_path, monkeypatch):
    """The run is cached per process: a test (or a caller) that points the runtime elsewhere
    must not leave later VMs in the old folder (a CI run got 'AF_UNIX path too long' so)."""
    monkeypatch.setenv("BALLOON_HARNESS_RUNTIME", str(tmp_path / "a"))
    first = current_run()
    monkeypatch.setenv("BALLOON_HARNESS_RUNTIME", str(tmp_path / "b"))
    second = current_run()
    assert first.path.parent.parent == tmp_path / "a"
    assert second.path.parent.parent == tmp_path / "b"


def test_a_vm_folder_too_deep_for_its_sockets_is_refused_clearly(tmp_path, short_tmp, monkeypatch):
    deep = tmp_path / ("d" * 60) / "runtime"
    monkeypatch.setenv("BALLOON_HARNESS_RUNTIME", str(deep))
    with pytest.raises(HarnessError) as info:
        current_run().vm_dir("vm-1")
    text = str(info.value)
    assert "unix sockets" in text and "BALLOON_HARNESS_RUNTIME" in text
    # A folder that fits is accepted.
    monkeypatch.setenv("BALLOON_HARNESS_RUNTIME", str(short_tmp / "r"))
    assert current_run().vm_dir("vm-1").is_dir()
