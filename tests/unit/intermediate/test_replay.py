"""replay: the decision core re-derives a run's decisions from its event log alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, is_stopped, marked_env, wait_for

from harness.guest.intermediate.replay import read_log, replay_events

GUEST_RUN = Path(__file__).with_name("data") / "guest-run-events.jsonl"


def replay_cli(path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.guest.intermediate", "replay", str(path), *args],
                          env=marked_env(), cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(not GUEST_RUN.exists(), reason=f"no recorded guest run at {GUEST_RUN}: record one with "
                    "BH_RECORD_INTERMEDIATE_EVENTS=<that path> pytest tests/vm/test_intermediate_guest.py")
def test_replay_reproduces_every_decision_of_a_recorded_guest_run():
    # Recorded by tests/vm/test_intermediate_guest.py (BH_RECORD_INTERMEDIATE_EVENTS=...): the
    # daemon in a Debian guest, two hogs squeezed by the balloon, real PSI.
    events = read_log(str(GUEST_RUN))
    report = replay_events(events)
    assert report.runs == 1 and report.inputs > 10
    assert report.differences == [], report.table()
    assert report.counts.get("stop", 0) >= 2 and report.counts.get("resume", 0) >= 2, report.counts
    assert any("scan" in e for e in events if e["event"] == "input"), "the scans are in the log"
    out = replay_cli(GUEST_RUN)
    assert out.returncode == 0 and "0 difference(s)" in out.stdout, out.stdout + out.stderr


def test_replay_finds_a_decision_the_log_does_not_have(spawn, start_daemon, psi, tmp_path):
    victim = spawn("replayvictim")
    daemon = start_daemon()
    psi.set(60)
    wait_for(lambda: is_stopped(victim.pid), 10, what="stopped")
    psi.set(0)
    daemon.wait_event("resume", timeout=10)
    assert daemon.terminate() == 0
    lines = daemon.events_path.read_text().splitlines()
    assert replay_cli(daemon.events_path).returncode == 0
    # A bug report whose daemon "forgot" its stop: the replay stops it, the daemon did not.
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join(line for line in lines if json.loads(line)["event"] != "stop") + "\n")
    out = replay_cli(tampered)
    assert out.returncode == 1 and "REPLAY ONLY" in out.stdout and f"pid:{victim.pid}" in out.stdout, out.stdout
    # A changed rule tried on the run: with an hour's --hold, nothing is resumed. (Not a higher
    # --stop-above: the fast signal's first readings of a step overshoot it, to 73 % for a 60 % step.)
    changed = replay_cli(daemon.events_path, "--rule", "hold=3600", "--json")
    result = json.loads(changed.stdout)
    assert changed.returncode == 1 and result["counts"].get("stop") == 1 and result["counts"].get("resume", 0) == 0
    assert ["resume", f"pid:{victim.pid}", "calm"] in [d["decision"] for d in result["differences"]]


@pytest.mark.parametrize("content", ["not json\n{}\n", ""])
def test_replay_of_something_else_is_a_clear_error(tmp_path, content):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    out = replay_cli(path)
    assert out.returncode == 2 and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_rules_added_later_read_as_off_in_an_older_log_and_are_recorded_when_on():
    # A `start` event written before --min-rss, --page-out and the repeated resume-blocked
    # report existed has no such keys: replaying it must apply the old rules, so a missing rule
    # is off, and a bare DaemonConfig (tests, embedders) decides as a bare Rules does.
    from harness.guest.intermediate.cli import build_parser, config_from_args
    from harness.guest.intermediate.config import DaemonConfig, Selection
    from harness.guest.intermediate.core import LATER_RULES, Rules

    old = Rules().to_dict()
    assert not LATER_RULES & set(old), old
    assert Rules.from_dict(old) == Rules() == Rules.of(DaemonConfig(selection=Selection()))
    # The command line turns them on, and its record carries them (replay applies them).
    cli = Rules.of(config_from_args(build_parser().parse_args(["run", "--pressure-file", "/dev/null"])))
    assert cli.page_out and cli.min_rss_kb == 16 * 1024 and cli.blocked_report_interval == 5.0
    assert LATER_RULES <= set(cli.to_dict()) and Rules.from_dict(cli.to_dict()) == cli
