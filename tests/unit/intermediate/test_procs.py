"""Reading /proc and sock_diag on real processes."""

from __future__ import annotations

import os
import re
import socket

import pytest
from conftest import marked_env, unix_socket_path, wait_for

from harness.guest.intermediate import procs
from harness.guest.intermediate.config import FreezeMethod
from harness.guest.intermediate.observe import Observer
from harness.guest.intermediate.units import Member, StopUnit, UnitKind
from harness.guest.intermediate.unixdiag import UnixPeers


def test_parse_stat_with_awkward_comm():
    stat = procs.parse_stat("42 (a) b (c)) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 777 0 0")
    assert stat.comm == "a) b (c)" and stat.state == "S" and stat.ppid == 1 and stat.starttime == 777


def test_read_own_process():
    me = procs.read_stat(os.getpid())
    assert me is not None and me.pid == os.getpid() and not me.is_kernel_thread
    assert procs.is_same_process(os.getpid(), me.starttime)
    assert not procs.is_same_process(os.getpid(), me.starttime + 1)
    assert procs.read_exe(os.getpid())
    assert procs.read_memory(os.getpid()).rss_kb > 0


def test_kernel_threads_are_recognised():
    kthreadd = procs.read_stat(procs.KTHREADD_PID)
    if kthreadd is None:
        pytest.skip("no kthreadd (pid 2) visible here, e.g. in a pid namespace")
    assert kthreadd.is_kernel_thread
    table = procs.ProcessTable.scan()
    kids = table.children.get(procs.KTHREADD_PID, [])
    assert kids and all(table.stats[p].is_kernel_thread for p in kids)


def test_fd_inodes_pipes_and_sockets():
    r, w = os.pipe()
    a, b = socket.socketpair()
    try:
        held = procs.read_fd_inodes(os.getpid())
        assert os.fstat(r).st_ino in held.pipes
        assert os.fstat(a.fileno()).st_ino in held.sockets
    finally:
        os.close(r)
        os.close(w)
        a.close()
        b.close()


def test_environ_marker(spawn):
    marked = spawn(env_extra={"BALLOON_HARNESS_CONTROL": "1"}, counter=False)
    plain = spawn(counter=False)
    assert procs.environ_contains(marked.pid, "BALLOON_HARNESS_CONTROL=1")
    assert not procs.environ_contains(plain.pid, "BALLOON_HARNESS_CONTROL=1")


def test_cgroup_paths():
    assert procs.normalize_cgroup("/sys/fs/cgroup/unified/a/b/", "/sys/fs/cgroup/unified") == "/a/b"
    assert procs.normalize_cgroup("/sys/fs/cgroup/unified", "/sys/fs/cgroup/unified") == "/"
    assert procs.normalize_cgroup("system.slice/x.service", "/sys/fs/cgroup") == "/system.slice/x.service"
    assert procs.cgroup_within("/a/b", "/a") and procs.cgroup_within("/a", "/a")
    assert not procs.cgroup_within("/ab", "/a")
    assert procs.cgroup_within("/anything", "/")
    assert procs.read_cgroup(os.getpid()) is not None
    assert procs.cgroup2_mount() is not None


def test_unix_peers_across_unrelated_processes(spawn, workdir):
    path = unix_socket_path(workdir, "peers")
    server = spawn(listen=path, counter=False)
    client = spawn(connect=path, counter=False)

    def linked():
        peers = UnixPeers.read()
        server_socks = procs.read_fd_inodes(server.pid).sockets
        client_socks = procs.read_fd_inodes(client.pid).sockets
        return any(peers.linked(c) & server_socks for c in client_socks)

    wait_for(linked, 5, what="client socket linked to a server socket")


def test_unix_peers_socketpair():
    a, b = socket.socketpair()
    try:
        peers = UnixPeers.read()
        ia, ib = os.fstat(a.fileno()).st_ino, os.fstat(b.fileno()).st_ino
        assert peers.available
        assert peers.linked(ia) == {ib} and peers.linked(ib) == {ia}
    finally:
        a.close()
        b.close()


def test_marked_env_has_no_control_marker():
    assert "BALLOON_HARNESS_CONTROL" not in marked_env()


def test_the_headroom_gate_reads_each_units_swapped_out_pages(spawn, monkeypatch):
    # This host has no swap, so no process has VmSwap > 0: the figure is injected where the
    # daemon reads it (/proc/PID/status); the rest -- which processes, whose start time -- is real.
    a, b, c = spawn("swapa", counter=False), spawn("swapb", counter=False), spawn("swapc", counter=False)
    swapped = {a.pid: 1000, b.pid: 234, c.pid: 5}
    real = procs._read_text

    def read_text(path: str) -> str | None:
        text = real(path)
        pid = int(path.split("/")[2]) if path.endswith("/status") else None
        if text is None or pid not in swapped:
            return text
        return re.sub(r"^VmSwap:\s+\d+ kB$", f"VmSwap:\t{swapped[pid]} kB", text, flags=re.M)

    monkeypatch.setattr(procs, "_read_text", read_text)

    def member(pid: int) -> Member:
        return Member(pid, procs.read_stat(pid).starttime, "w")

    group = StopUnit(UnitKind.PROCESS_GROUP, "pgid:1", (member(a.pid), member(b.pid)), FreezeMethod.SIGNAL)
    recycled = StopUnit(UnitKind.PROCESS, "pid:2", (Member(c.pid, member(c.pid).starttime + 1, "w"),), FreezeMethod.SIGNAL)
    memory = Observer.memory([group, recycled])
    assert memory.swap_kb == (("pgid:1", 1234), ("pid:2", 0)), "a recycled pid's pages are not the unit's"
    assert memory.available_kb == pytest.approx(procs.read_mem_available_kb(), rel=0.5) and memory.available_kb > 0
