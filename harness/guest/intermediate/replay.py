"""`replay EVENTS.jsonl`: re-derive every decision of a daemon run from its event log alone.

Each `input` record is given to the decision core (core.py) with the rules of the run's `start`
event (or changed ones: `--rule hold=3`); the core's actions are compared with the events the
daemon logged after that input, and each action's logged outcome (what a stop really stopped,
a resume that failed) is settled into the state, as the daemon did. Ticks the daemon did not log
changed nothing, so with the same rules the replay is exact; with changed rules a time-based
decision can only fall on a logged tick (and a scan the daemon never made is reported missing).
"""

from __future__ import annotations

import difflib
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from . import events as ev
from .core import (
    CoreState,
    Decision,
    Drop,
    Emit,
    Held,
    Need,
    Resume,
    ResumeOutcome,
    Rules,
    Stop,
    StopOutcome,
    decide,
    release_all,
    settle,
)
from .snapshot import InputDecoder, Memory, Observation, Scan, members_of
from .units import StopUnit

# Events written by others than the daemon's loop (recovery before `start`, the watchdog and
# resume-all after the daemon died): not decisions of the core.
NOT_DECISIONS = {"recovered", "watchdog", "resume-all", "pid-recycled"}
DECISION_EVENTS = {ev.PRESSURE, ev.SKIP, ev.STOP, ev.STOP_ABANDONED, ev.RESUME, ev.RESUME_FAILED, ev.GONE}
SHOWN = {"stop", "resume", "gone"}  # the table's rows; other kinds are shown where they differ


def action_key(action: Stop | Resume | Drop | Emit) -> tuple[Any, ...]:
    if isinstance(action, Stop):
        return ("stop", action.unit.key, "pressure")
    if isinstance(action, Resume):
        return ("resume", action.held.unit.key, action.reason)
    if isinstance(action, Drop):
        return ("gone", action.held.unit.key, "gone")
    extra = dict(action.extra)
    if action.event == ev.PRESSURE:
        return ("pressure", f"{extra['previous']}->{extra['state']}", action.reason, extra["stopped"])
    return ("skip", action.pid, action.reason)


def page_out_key(unit_key: str) -> tuple[Any, ...]:
    """A stop decided with a page-out is two decisions: the stop, and paging it out (what the
    page-out freed is an outcome, the `page-out` event, not compared)."""
    return ("page-out", unit_key, "stopped")


def action_keys(action: Stop | Resume | Drop | Emit) -> list[tuple[Any, ...]]:
    keys = [action_key(action)]
    if isinstance(action, Stop) and action.page_out:
        keys.append(page_out_key(action.unit.key))
    return keys


def event_keys(event: dict[str, Any]) -> list[tuple[Any, ...]]:
    keys = [event_key(event)]
    if event["event"] in (ev.STOP, ev.STOP_ABANDONED) and event.get("page_out"):
        keys.append(page_out_key(event["unit"]))
    return keys


def event_key(event: dict[str, Any]) -> tuple[Any, ...]:
    kind = event["event"]
    if kind in (ev.STOP, ev.STOP_ABANDONED):
        return ("stop", event["unit"], "pressure")
    if kind == ev.GONE and event["reason"] == "gone":
        return ("gone", event["unit"], "gone")
    if kind in (ev.RESUME, ev.RESUME_FAILED, ev.GONE):
        return ("resume", event["unit"], event["reason"])
    if kind == ev.PRESSURE:
        return ("pressure", f"{event['previous']}->{event['state']}", event["reason"], event["stopped"])
    return ("skip", event["pid"], event["reason"])


@dataclass(frozen=True)
class Row:
    t: float  # seconds since the run's start event
    key: tuple[Any, ...]
    daemon: bool  # the daemon logged it
    replay: bool  # the core decided it
    note: str = ""

    @property
    def same(self) -> bool:
        return self.daemon and self.replay

    def cells(self) -> list[str]:
        what = {(True, True): "same", (True, False): "DAEMON ONLY", (False, True): "REPLAY ONLY"}
        verdict = what.get((self.daemon, self.replay), "MISSING INPUT")
        return [f"{self.t:8.3f}", str(self.key[0]), str(self.key[1]), str(self.key[2]), verdict + (f" ({self.note})" if self.note else "")]


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    inputs: int = 0
    runs: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def differences(self) -> list[Row]:
        return [r for r in self.rows if not r.same]

    def table(self) -> str:
        shown = [r for r in self.rows if r.key[0] in SHOWN or not r.same]
        header = ["t (s)", "decision", "unit / pid", "reason", "daemon vs replay"]
        cells = [header] + [r.cells() for r in shown]
        widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
        counts = ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items()))
        lines.append(f"replay: {self.runs} run(s), {self.inputs} inputs, decisions: {counts or 'none'}; "
                     f"{len(self.differences)} difference(s)")
        return "\n".join(lines)


def _held_from(item: dict[str, Any]) -> Held:
    return Held(unit=StopUnit.from_dict(item["unit"]), since=float(item["since"]),
                stopped_at=float(item["stopped_at"]), retry_at=float(item["retry_at"]))


def _stop_members(event: dict[str, Any] | None, unit: StopUnit) -> tuple:
    if event is None:
        return unit.members  # the daemon made no such stop: assume the core's would have worked
    if event["event"] == ev.STOP_ABANDONED:
        return ()
    if "members" in event:
        return members_of(event["members"])
    by_pid = {m.pid: m for m in unit.members}
    return tuple(by_pid[p] for p in event["pids"] if p in by_pid)


def _resume_failed(event: dict[str, Any] | None, held: Held) -> tuple:
    if event is None:
        return ()
    failed = set(event.get("failed", ())) if event["event"] == ev.RESUME else set()
    if event["event"] == ev.RESUME_FAILED:
        failed = set(event["pids"])
    return tuple(m for m in held.unit.members if m.pid in failed)


class _Run:
    """One daemon run: from its `start` event to the next."""

    def __init__(self, start: dict[str, Any], overrides: dict[str, Any], report: Report) -> None:
        rules = Rules.from_dict(start.get("rules") or {})
        self.rules = apply_overrides(rules, overrides)
        self.state = CoreState(held=tuple(_held_from(h) for h in start.get("held") or ()))
        self.decoder = InputDecoder()
        self.last_scan: Scan | None = None
        self.last_memory: Memory | None = None
        self.t0 = float(start["t"])
        self.report = report
        report.runs += 1

    def tick(self, record: dict[str, Any], logged: list[dict[str, Any]]) -> None:
        report = self.report
        report.inputs += 1
        t = float(record["t"]) - self.t0
        result: Decision | Need
        if "release" in record:
            obs = Observation(now=float(record["m"]), wall=float(record["t"]), reading=None)
            result = release_all(self.state, self.rules, obs, str(record["release"]))
        else:
            obs = self.decoder.decode(record)
            self.last_scan = obs.scan or self.last_scan
            self.last_memory = obs.memory or self.last_memory
            result = decide(self.state, self.rules, obs)
        note = ""
        if isinstance(result, Need):
            # Changed rules may want a scan or memory figures the daemon never read here: decide
            # with the latest ones logged, and say so.
            older = replace(obs, scan=obs.scan or self.last_scan, memory=obs.memory or self.last_memory)
            if (not result.scan or older.scan is not None) and (not result.memory_for or older.memory is not None):
                result, note = decide(self.state, self.rules, older), "on older inputs"
        decisions = [e for e in logged if e["event"] in DECISION_EVENTS and e.get("reason") not in NOT_DECISIONS]
        got = [key for e in decisions for key in event_keys(e)]
        if isinstance(result, Need):
            what = "a scan" if result.scan else "memory figures"
            report.rows.append(Row(t, ("input", "-", f"needs {what} the log does not have"), False, False))
            report.rows += [Row(t, k, True, False) for k in got]
            return
        wanted = [key for a in result.actions for key in action_keys(a)]
        matcher = difflib.SequenceMatcher(a=got, b=wanted, autojunk=False)
        for op, i1, i2, j1, j2 in matcher.get_opcodes():
            if op == "equal":
                report.rows += [Row(t, k, True, True) for k in got[i1:i2]]
            else:
                report.rows += [Row(t, k, True, False) for k in got[i1:i2]]
                report.rows += [Row(t, k, False, True, note) for k in wanted[j1:j2]]
        for key in wanted:
            report.counts[key[0]] = report.counts.get(key[0], 0) + 1
        self.state = self._settle(result, decisions, obs.now)

    def _settle(self, decision: Decision, logged: list[dict[str, Any]], now: float) -> CoreState:
        state = decision.state
        remaining = list(logged)

        def take(key: tuple[Any, ...]) -> dict[str, Any] | None:
            for event in remaining:
                if event_key(event) == key:
                    remaining.remove(event)
                    return event
            return None

        for action in decision.actions:
            if isinstance(action, Stop):
                event = take(action_key(action))
                state = settle(state, self.rules, StopOutcome(action.unit.key, _stop_members(event, action.unit)))
            elif isinstance(action, Resume):
                event = take(action_key(action))
                state = settle(state, self.rules, ResumeOutcome(action, _resume_failed(event, action.held), now))
        return state


def apply_overrides(rules: Rules, overrides: dict[str, Any]) -> Rules:
    thresholds = {k: float(v) for k, v in overrides.items() if k in ("stop_above", "resume_below", "hold")}
    other = {k: v for k, v in overrides.items() if k not in thresholds}
    if thresholds:
        rules = replace(rules, thresholds=replace(rules.thresholds, **thresholds))
    for name, value in other.items():
        if name not in Rules.__dataclass_fields__ or name == "thresholds":
            raise ValueError(f"unknown rule {name!r}")
        current = getattr(rules, name)
        if isinstance(current, bool):
            parsed: Any = str(value).lower() in ("1", "true", "yes", "on")
        elif value in (None, "none"):
            parsed = None
        else:
            parsed = type(current or 0.0)(value)
        rules = replace(rules, **{name: parsed})
    return rules


def replay_events(events: Iterable[dict[str, Any]], overrides: dict[str, Any] | None = None) -> Report:
    report = Report()
    run: _Run | None = None
    pending: tuple[dict[str, Any], list[dict[str, Any]]] | None = None

    def flush() -> None:
        nonlocal pending
        if run is not None and pending is not None:
            run.tick(*pending)
        pending = None

    for event in events:
        kind = event.get("event")
        if kind == ev.START:
            flush()
            run = _Run(event, overrides or {}, report)
        elif run is None:
            continue  # before the first start: a recovery's events
        elif kind == ev.INPUT:
            flush()
            pending = (event, [])
        elif kind == ev.EXIT:
            flush()
            run = None
        elif pending is not None:
            pending[1].append(event)
    flush()
    return report


def read_log(path: str) -> list[dict[str, Any]]:
    """The events of a log; a last line cut short (a killed daemon) is ignored."""
    found = []
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            found.append(json.loads(line))
        except ValueError:
            if number != len(lines):
                raise ValueError(f"{path}:{number}: not a JSON line") from None
    return found


def parse_rule(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"--rule wants NAME=VALUE, got {text!r}")
    return name.strip().replace("-", "_"), value.strip()


def main(path: str, rules: Sequence[str] = (), as_json: bool = False) -> int:
    try:
        events = read_log(path)
        overrides = dict(parse_rule(r) for r in rules)
        report = replay_events(events, overrides)
    except (OSError, ValueError, KeyError) as exc:
        print(f"intermediate: error: cannot replay {path}: {exc}", file=sys.stderr)
        return 2
    if report.runs == 0:
        print(f"intermediate: error: {path} has no daemon run (no 'start' event)", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps({"runs": report.runs, "inputs": report.inputs, "counts": report.counts,
                          "differences": [{"t": round(r.t, 3), "decision": list(r.key), "daemon": r.daemon,
                                           "replay": r.replay} for r in report.differences]}))
    else:
        print(report.table())
    return 1 if report.differences else 0
