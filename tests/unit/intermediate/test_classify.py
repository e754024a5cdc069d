"""Classification of real processes: protected (core, descendant, ancestor, similar, dependent),
never-stop, distinct -- always scoped to the descendants of this pytest process."""

from __future__ import annotations

import os
import socket

import pytest
from conftest import (
    WORKER,
    move_to_cgroup,
    pid_from_ready,
    set_oom_score_adj,
    unix_socket_path,
    wait_for,
    worker_argv,
)

from harness.guest.intermediate import procs
from harness.guest.intermediate.classify import Category, Classifier
from harness.guest.intermediate.config import Selection
from harness.guest.intermediate.procs import normalize_cgroup


def classify(**selection):
    selection.setdefault("scope_pid", os.getpid())
    return Classifier(Selection(**selection)).classify()


def reason(cls, pid):
    verdict = cls.verdict(pid)
    return verdict.reason if verdict else None


def test_core_descendant_and_ancestor(spawn, exe_copy, workdir):
    leaf_argv, leaf_ready, _ = worker_argv(exe_copy("py-leaf"), workdir, "leaf", "leaf")
    mid_argv, mid_ready, _ = worker_argv(exe_copy("py-mid"), workdir, "mid", "mid", child=leaf_argv)
    parent = spawn("parent", exe="py-parent", child=mid_argv)
    mid, leaf = pid_from_ready(mid_ready), pid_from_ready(leaf_ready)
    other = spawn("other")

    cls = classify(protect_comms=("mid",))
    assert reason(cls, mid) == "protected:core"
    assert reason(cls, leaf) == "protected:core"  # descendants of the core are core
    assert reason(cls, parent.pid) == "protected:ancestor"
    assert reason(cls, other.pid) == "distinct"
    assert cls.verdict(os.getpid()) is None, "the scope root itself is never considered"
    assert cls.verdict(1) is None

    by_pid = classify(protect_pids=(mid,))
    assert reason(by_pid, leaf) == "protected:core" and reason(by_pid, other.pid) == "distinct"


def test_protect_comm_matches_argv_basename(spawn, workdir):
    script = workdir / "protected.py"
    script.write_text(WORKER.read_text())
    core = spawn(None, exe="py-core", script=script)  # comm: interpreter name; argv[1]: protected.py
    other = spawn(None)
    cls = classify(protect_comms=("protected.py",))
    assert reason(cls, core.pid) == "protected:core"
    assert reason(cls, other.pid) == "distinct"


def test_similar_needs_same_exe_and_same_cgroup(spawn, test_cgroup):
    core = spawn("core", exe="py-core")
    twin = spawn("twin", exe="py-core")
    other_exe = spawn("otherexe", exe="py-distinct")
    elsewhere = spawn("elsewhere", exe="py-core")
    move_to_cgroup(elsewhere.pid, test_cgroup("elsewhere"))
    cls = classify(protect_comms=("core",))
    assert reason(cls, core.pid) == "protected:core"
    assert reason(cls, twin.pid) == "protected:similar"
    assert reason(cls, other_exe.pid) == "distinct"
    assert reason(cls, elsewhere.pid) == "distinct", "same exe in another cgroup is not similar"


def test_protect_cgroup(spawn, test_cgroup):
    inside = spawn("inside")
    outside = spawn("outside")
    path = test_cgroup("protected")
    move_to_cgroup(inside.pid, path)
    cls = classify(protect_cgroups=(normalize_cgroup(path),))
    assert reason(cls, inside.pid) == "protected:core"
    assert reason(cls, outside.pid) == "distinct"


def test_pipe_dependency_is_transitive(spawn):
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    try:
        spawn("core", exe="py-core", pass_fds=(r1,))
        middle = spawn("middle", pass_fds=(w1, r2))
        far = spawn("far", pass_fds=(w2,))
    finally:
        for fd in (r1, w1, r2, w2):
            os.close(fd)
    unrelated = spawn("unrelated")
    cls = classify(protect_comms=("core",))
    assert reason(cls, middle.pid) == "protected:dependent"
    assert reason(cls, far.pid) == "protected:dependent"
    assert reason(cls, unrelated.pid) == "distinct"


def test_socketpair_dependency(spawn):
    a, b = socket.socketpair()
    try:
        core = spawn("core", exe="py-core", pass_fds=(a.fileno(),))
        peer = spawn("peer", pass_fds=(b.fileno(),))
    finally:
        a.close()
        b.close()
    cls = classify(protect_comms=("core",))
    assert reason(cls, core.pid) == "protected:core"
    assert reason(cls, peer.pid) == "protected:dependent"


@pytest.mark.parametrize("protected_side", ["server", "client"])
def test_unix_stream_connection_dependency(spawn, workdir, protected_side):
    path = unix_socket_path(workdir, "svc")
    server = spawn("server", exe="py-core" if protected_side == "server" else "py-distinct", listen=path)
    client = spawn("client", exe="py-core" if protected_side == "client" else "py-distinct", connect=path)
    bystander = spawn("bystander")
    wanted = {"server": server.pid, "client": client.pid}
    other = client.pid if protected_side == "server" else server.pid

    def settled():
        cls = classify(protect_comms=(protected_side,))
        return cls if reason(cls, other) == "protected:dependent" else None

    cls = wait_for(settled, 5, what="the other end classified dependent")
    assert reason(cls, wanted[protected_side]) == "protected:core"
    assert reason(cls, bystander.pid) == "distinct"


@pytest.mark.parametrize("protected_side", ["listener", "client"])
def test_a_client_queued_on_a_listener_is_linked_to_it(spawn, workdir, protected_side):
    # The listener never accepts: the client's connection waits in its queue, where only
    # sock_diag's UNIX_DIAG_ICONS shows it (the client's peer is an embryo socket without an inode).
    path = unix_socket_path(workdir, "queue")
    listener = spawn("listener", exe="py-core" if protected_side == "listener" else "py-distinct",
                     listen=path, no_accept=True)
    client = spawn("client", exe="py-core" if protected_side == "client" else "py-distinct", connect=path)
    cls = classify(protect_comms=(protected_side,))
    core, other = (listener, client) if protected_side == "listener" else (client, listener)
    assert reason(cls, core.pid) == "protected:core"
    assert reason(cls, other.pid) == "protected:dependent"


def test_dependency_does_not_propagate_through_never_stop(spawn, workdir):
    # core -pipe- bridge(never-stop) -pipe- far: far stays distinct.
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    try:
        spawn("core", exe="py-core", pass_fds=(r1,))
        bridge = spawn("bridge", pass_fds=(w1, r2))
        far = spawn("far", pass_fds=(w2,))
    finally:
        for fd in (r1, w1, r2, w2):
            os.close(fd)
    # Like journald: core and other both connected to a never-stop server.
    path = unix_socket_path(workdir, "journal")
    journal = spawn("systemd-journal", listen=path)
    spawn("core2", exe="py-core", connect=path)
    logger = spawn("logger", connect=path)
    cls = classify(protect_comms=("core", "core2"), never_stop_comms=("bridge",))
    assert reason(cls, bridge.pid) == "never-stop:comm"
    assert reason(cls, far.pid) == "distinct"
    assert reason(cls, journal.pid) == "never-stop:systemd"
    assert reason(cls, logger.pid) == "distinct"


@pytest.mark.parametrize(
    "comm, expected",
    [
        ("sshd", "never-stop:sshd"),
        ("systemd", "never-stop:systemd"),
        ("systemd-journal", "never-stop:systemd"),
        ("systemd-logind", "never-stop:systemd"),
        ("dbus-daemon", "never-stop:dbus-daemon"),
        ("agetty", "never-stop:agetty"),
        ("systemdx", "distinct"),
    ],
)
def test_builtin_never_stop_names(spawn, comm, expected):
    worker = spawn(comm, counter=False)
    assert reason(classify(), worker.pid) == expected


def test_never_stop_rules(spawn, test_cgroup, monkeypatch):
    long_name = spawn("averyveryverylongname", counter=False)  # comm truncated to 15 chars
    oom = spawn("oom", counter=False)
    if not set_oom_score_adj(oom.pid, -1000):
        # Lowering oom_score_adj needs CAP_SYS_RESOURCE, which this sandbox drops even for
        # root: the one fault we cannot produce for real, so the /proc value is faked.
        real = procs.read_oom_score_adj
        monkeypatch.setattr(procs, "read_oom_score_adj", lambda pid: -1000 if pid == oom.pid else real(pid))
    marked = spawn("marked", env_extra={"BALLOON_HARNESS_CONTROL": "1"}, counter=False)
    path = test_cgroup("never")
    in_cgroup = spawn("incgroup", counter=False)
    move_to_cgroup(in_cgroup.pid, path)
    plain = spawn("plain", counter=False)
    cls = classify(never_stop_comms=("averyveryverylongname",), never_stop_cgroups=(normalize_cgroup(path),))
    assert reason(cls, long_name.pid) == "never-stop:comm"
    assert reason(cls, oom.pid) == "never-stop:oom-score-adj"
    assert reason(cls, marked.pid) == "never-stop:control-env"
    assert reason(cls, in_cgroup.pid) == "never-stop:cgroup"
    assert reason(cls, plain.pid) == "distinct"


def test_never_stop_is_not_inherited_except_the_environment_marker(spawn, exe_copy, workdir):
    kid_argv, kid_ready, _ = worker_argv(exe_copy("py-distinct"), workdir, "sshkid", "shell")
    sshd = spawn("sshd", child=kid_argv)
    shell = pid_from_ready(kid_ready)
    mkid_argv, mkid_ready, _ = worker_argv(exe_copy("py-distinct"), workdir, "mkid", "harnesskid")
    spawn("harness", child=mkid_argv, env_extra={"BALLOON_HARNESS_CONTROL": "1"})
    marked_kid = pid_from_ready(mkid_ready)
    cls = classify()
    assert reason(cls, sshd.pid) == "never-stop:sshd"
    assert reason(cls, shell) == "distinct", "a workload started from a shell must stay stoppable"
    assert reason(cls, marked_kid) == "never-stop:control-env"


def test_self_pids_and_scope_cgroup(spawn, test_cgroup):
    a = spawn("a", counter=False)
    b = spawn("b", counter=False)
    cls = Classifier(Selection(scope_pid=os.getpid()), self_pids={a.pid}).classify()
    assert reason(cls, a.pid) == "never-stop:self"
    path = test_cgroup("scope")
    move_to_cgroup(b.pid, path)
    scoped = classify(scope_pid=None, scope_cgroup=normalize_cgroup(path))
    assert set(scoped.verdicts) == {b.pid}
    assert scoped.verdict(b.pid).category is Category.DISTINCT
