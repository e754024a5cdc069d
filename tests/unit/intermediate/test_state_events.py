"""The state dir (atomic writes, lock) and the JSONL event log."""

from __future__ import annotations

import json
import os
import time

import pytest

from harness.guest.intermediate.config import FreezeMethod
from harness.guest.intermediate.events import EventLog, read_events
from harness.guest.intermediate.pressure import PressureReading
from harness.guest.intermediate.state import StateError, StateStore, StoppedRecord
from harness.guest.intermediate.units import Member, StopUnit, UnitKind


def sample_record() -> StoppedRecord:
    unit = StopUnit(
        kind=UnitKind.PROCESS_GROUP,
        key="pgid:10",
        members=(Member(10, 111, "sh"), Member(11, 112, "worker")),
        method=FreezeMethod.SIGNAL,
        rss_kb=1234,
    )
    return StoppedRecord(unit=unit, since=time.time())


def test_state_roundtrip_and_atomic_write(tmp_path):
    store = StateStore(str(tmp_path / "state"))
    record = sample_record()
    store.save([record])
    assert store.load() == [record]
    names = os.listdir(tmp_path / "state")
    assert names == ["stopped.json"], "no temp file may be left behind"
    data = json.loads((tmp_path / "state" / "stopped.json").read_text())
    assert data["version"] == 1 and data["owner_pid"] == os.getpid()
    store.save([])
    assert store.load() == []


def test_state_malformed_is_an_error(tmp_path):
    store = StateStore(str(tmp_path))
    (tmp_path / "stopped.json").write_text("{not json")
    with pytest.raises(StateError):
        store.load()


def test_state_lock_is_exclusive(tmp_path):
    first, second = StateStore(str(tmp_path)), StateStore(str(tmp_path))
    first.lock()
    try:
        with pytest.raises(StateError, match="in use"):
            second.lock()
    finally:
        first.unlock()
    second.lock()
    second.unlock()


def test_event_log_lines(tmp_path):
    path = str(tmp_path / "events.jsonl")
    before = time.time()
    log = EventLog(path)
    reading = PressureReading(t=1.0, some_avg10=12.345, some_fast=30.0, full_avg10=1.0)
    log.emit("stop", pid=42, comm="x", reason="pressure", pressure=reading, pids=[42])
    log.emit("exit", reason="exit")
    log.close()
    events = read_events(path)
    assert [e["event"] for e in events] == ["stop", "exit"]
    assert events[0]["pressure"] == {"some_avg10": 12.35, "some_fast": 30.0, "full_avg10": 1.0}
    for event in events:
        assert {"t", "event", "pid", "comm", "reason", "pressure"} <= event.keys()
        assert before <= event["t"] <= time.time(), "t is the wall clock at the event"
