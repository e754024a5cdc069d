"""Classification of real processes: protected (core, descendant, ancestor, similar, dependent),
never-stop, distinct -- always scoped to the descendants of this pytest process."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess

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
from harness.guest.intermediate.classify import Category, Classifier, Verdict
from harness.guest.intermediate.config import Selection
from harness.guest.intermediate.procs import normalize_cgroup
from harness.guest.intermediate.unixdiag import UnixPeers


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


# == what `make mutation` found unchecked ==========================================================


def test_categories_and_what_a_classification_keeps(spawn):
    core = spawn("core", exe="py-core")
    keep = spawn("keepme", counter=False)
    other = spawn("other", counter=False)
    cls = classify(protect_comms=("core",), never_stop_comms=("keepme",))
    assert cls.verdict(core.pid) == Verdict(Category.PROTECTED, "protected:core")
    assert cls.verdict(keep.pid) == Verdict(Category.NEVER_STOP, "never-stop:comm")
    assert cls.verdict(other.pid) == Verdict(Category.DISTINCT, "distinct")
    assert {core.pid, keep.pid, other.pid} <= set(cls.verdicts)
    assert core.pid in cls.pids(Category.PROTECTED) and keep.pid in cls.pids(Category.NEVER_STOP)
    assert other.pid in cls.pids(Category.DISTINCT) and other.pid not in cls.pids(Category.PROTECTED)
    assert cls.pids(Category.DISTINCT) == sorted(cls.pids(Category.DISTINCT))
    # The table and the process facts it decided on go with it (the daemon's scan and status use them).
    assert cls.table.stats[other.pid].comm == "other" and cls.infos[other.pid].comm == "other"


def test_pid_1_and_kernel_threads_are_never_stopped(spawn):
    worker = spawn("anyworker", counter=False)
    # Unscoped, as in a guest: the whole machine (only read).
    cls = Classifier(Selection()).classify()
    assert cls.verdict(1) == Verdict(Category.NEVER_STOP, "never-stop:pid1")
    assert cls.verdict(worker.pid) == Verdict(Category.DISTINCT, "distinct"), "and everything else is classified"
    kthreads = [pid for pid, stat in cls.table.stats.items() if stat.is_kernel_thread]
    if not kthreads:
        pytest.skip("no kernel thread visible here (a pid namespace): pid 1 checked only")
    assert all(cls.verdict(pid) == Verdict(Category.NEVER_STOP, "never-stop:kthread") for pid in kthreads)


def test_the_classifying_processs_own_ancestors_are_never_stop(spawn):
    # The daemon must never stop the shell or service manager it runs under. Here the classifier
    # runs two forks below pytest (the scope root), so its parent is in scope.
    bystander = spawn("bystander", counter=False)
    scope = os.getpid()
    r, w = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.close(r)
        try:
            inner = os.fork()
            if inner == 0:
                try:
                    cls = Classifier(Selection(scope_pid=scope)).classify()
                    found = [reason(cls, os.getppid()), reason(cls, os.getpid())]
                except BaseException as exc:  # reported to the parent
                    found = [f"error: {exc!r}"]
                os.write(w, json.dumps(found).encode())
                os._exit(0)
            os.waitpid(inner, 0)
        finally:
            os._exit(0)
    os.close(w)
    try:
        found = json.loads(os.read(r, 65536) or b'["nothing"]')
    finally:
        os.close(r)
        os.waitpid(middle, 0)
    assert found == ["never-stop:daemon-ancestor", "distinct"], "not the classifier itself: that is self_pids"
    # Seen from pytest, which descends from none of them, the processes it started are stoppable.
    assert reason(classify(), bystander.pid) == "distinct"


def test_a_scope_pid_that_is_gone_or_recycled_leaves_nothing_in_scope(spawn, exe_copy, workdir, caplog):
    kid_argv, kid_ready, _ = worker_argv(exe_copy("py-distinct"), workdir, "scopekid", "scopekid")
    root = spawn("scoperoot", child=kid_argv)
    kid = pid_from_ready(kid_ready)
    start = procs.read_stat(root.pid).starttime
    assert reason(classify(scope_pid=root.pid, scope_starttime=start), kid) == "distinct"
    caplog.set_level(logging.WARNING, logger="harness.guest.intermediate.classify")
    recycled = Classifier(Selection(scope_pid=root.pid, scope_starttime=start + 1))
    assert recycled.classify().verdicts == {} and recycled.classify().verdicts == {}
    gone = [f"--scope-pid {root.pid} is gone: nothing is in scope any more"]
    assert caplog.messages == gone, "logged once, not at every scan"
    caplog.clear()
    dead = subprocess.Popen(["/bin/true"])
    dead.wait()
    for starttime in (None, 1):
        assert Classifier(Selection(scope_pid=dead.pid, scope_starttime=starttime)).classify().verdicts == {}
    assert caplog.messages == [f"--scope-pid {dead.pid} is gone: nothing is in scope any more"] * 2


def test_zombies_are_not_in_scope(spawn):
    zombie = spawn("zombie", counter=False)
    zombie.popen.kill()  # not reaped yet: a zombie child of pytest
    wait_for(lambda: procs.read_stat(zombie.pid).state == "Z", 5, what="a zombie")
    try:
        assert zombie.pid not in classify().verdicts
    finally:
        zombie.popen.wait()


def test_protecting_the_scope_root_protects_everything_under_it(spawn):
    worker = spawn("underroot", counter=False)
    assert reason(classify(protect_pids=(os.getpid(),)), worker.pid) == "protected:core"


def test_the_given_process_table_and_socket_peers_are_the_ones_used(spawn, workdir):
    before = procs.ProcessTable.scan()
    later = spawn("later", counter=False)
    assert later.pid not in Classifier(Selection(scope_pid=os.getpid())).classify(table=before).verdicts
    path = unix_socket_path(workdir, "peers")
    spawn("server", exe="py-core", listen=path)
    client = spawn("client", connect=path)
    wait_for(lambda: reason(classify(protect_comms=("server",)), client.pid) == "protected:dependent", 5,
             what="the client linked to the server")
    no_peers = UnixPeers({}, available=False)  # sock_diag unavailable: connections are not seen
    cls = Classifier(Selection(scope_pid=os.getpid(), protect_comms=("server",))).classify(peers=no_peers)
    assert reason(cls, client.pid) == "distinct"


def test_every_link_of_a_protected_process_counts(spawn):
    # One process holds a pipe to each of two others, a socket it shares with a third (the same
    # inode, inherited) and one end of a socketpair whose other end a fourth holds.
    p1r, p1w = os.pipe()
    p2r, p2w = os.pipe()
    shared, _unused = socket.socketpair()
    a, b = socket.socketpair()
    try:
        spawn("hub", exe="py-core", pass_fds=(p1r, p2r, shared.fileno(), a.fileno()))
        first = spawn("pipe1", pass_fds=(p1w,))
        second = spawn("pipe2", pass_fds=(p2w,))
        sharer = spawn("sharer", pass_fds=(shared.fileno(),))
        peer = spawn("peer", pass_fds=(b.fileno(),))
    finally:
        for fd in (p1r, p1w, p2r, p2w):
            os.close(fd)
        for sock in (shared, _unused, a, b):
            sock.close()
    bystander = spawn("bystander")
    cls = classify(protect_comms=("hub",))
    assert {pid: reason(cls, pid) for pid in (first.pid, second.pid, sharer.pid, peer.pid, bystander.pid)} == {
        first.pid: "protected:dependent", second.pid: "protected:dependent", sharer.pid: "protected:dependent",
        peer.pid: "protected:dependent", bystander.pid: "distinct"}
