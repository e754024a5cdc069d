"""The guest sampler's live stream, on the host (it is standard-library code): finding the
virtio port by name in sysfs, following a log that grows and is replaced, and the lines it
sends. A real FIFO stands in for the port's character device."""

import json
import os
import subprocess
import sys
import threading

from harness.guest.sampler import Follower, find_port, port_lines


def test_the_port_is_found_by_its_name_in_sysfs(tmp_path):
    sys_dir = tmp_path / "virtio-ports"
    for entry, name in (("vport0p0", "org.qemu.guest_agent.0"), ("vport1p1", "org.balloon-harness.ledger")):
        (sys_dir / entry).mkdir(parents=True)
        (sys_dir / entry / "name").write_text(name + "\n")
    assert find_port("org.balloon-harness.ledger", str(sys_dir), "/dev") == "/dev/vport1p1"
    assert find_port("absent", str(sys_dir)) is None
    assert find_port("x", str(tmp_path / "no-such-dir")) is None


def test_the_follower_sends_each_complete_line_once_and_restarts_on_a_new_file(tmp_path):
    log = tmp_path / "events.jsonl"
    follower = Follower(str(log))
    assert follower.new_lines() == []  # not there yet
    log.write_text('{"a": 1}\n{"b": 2')
    assert follower.new_lines() == [b'{"a": 1}']
    with log.open("a") as fh:
        fh.write('}\n{"c": 3}\n')
    assert follower.new_lines() == [b'{"b": 2}', b'{"c": 3}']
    assert follower.new_lines() == []
    log.unlink()
    log.write_text('{"fresh": 1}\n')  # a restarted daemon begins a new log
    assert follower.new_lines() == [b'{"fresh": 1}']


def test_port_lines_tag_samples_and_forwarded_events(tmp_path):
    log = tmp_path / "events.jsonl"
    log.write_text('{"event": "stop", "pid": 7}\nnot json\n')
    data = port_lines({"t": 1.0, "mem_total_mib": 900}, {"intermediate": Follower(str(log))})
    lines = [json.loads(line) for line in data.decode().splitlines()]
    assert lines == [{"kind": "sample", "t": 1.0, "mem_total_mib": 900},
                     {"kind": "event", "source": "intermediate", "record": {"event": "stop", "pid": 7}}]


def test_the_sampler_streams_into_a_port(tmp_path):
    """The whole program, its --port a FIFO that a fake sysfs entry names."""
    fifo = tmp_path / "vport9p1"
    os.mkfifo(fifo)
    sys_dir = tmp_path / "sys"
    (sys_dir / "vport9p1").mkdir(parents=True)
    (sys_dir / "vport9p1" / "name").write_text("test.port\n")
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))  # until the sampler exits
    reader.start()
    code = (f"import functools, os, signal, threading\n"
            f"import harness.guest.sampler as s\n"
            f"s.find_port = functools.partial(s.find_port, sys_dir={str(sys_dir)!r}, dev_dir={str(tmp_path)!r})\n"
            f"threading.Timer(1.2, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()\n"
            f"s.main(['--out', {str(tmp_path / 'local.jsonl')!r}, '--interval', '0.2', '--port', 'test.port'])\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    reader.join(10)
    lines = [json.loads(x) for x in received[0].decode().splitlines()]
    assert len(lines) >= 3 and all(x["kind"] == "sample" and "psi_some_avg10" in x for x in lines)
    local = (tmp_path / "local.jsonl").read_text().splitlines()
    assert len(local) == len(lines)  # the same samples, also kept in the guest's own file
