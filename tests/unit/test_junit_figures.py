"""A scenario test's key figures reach the JUnit XML as properties of its test case: a real
pytest run (a subprocess, with the plugin as installed) of a tiny test that records a real
summary the way the `run_scenario` fixture does."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.figures import key_figures

FIXTURE = Path(__file__).parent / "fixtures" / "demo-overcommit-summary.json"

TINY_TEST = f"""
import json
from harness.pytest_plugin import record_scenario_figures

SUMMARY = json.loads(open({str(FIXTURE)!r}).read())

def test_scenario(request):
    record_scenario_figures(request.node, SUMMARY["off"], "demo-overcommit.off")
    record_scenario_figures(request.node, SUMMARY["on"], "demo-overcommit.on")

def test_plain():
    pass
"""


def junit_properties(tmp_path: Path, *extra: str) -> dict[str, dict[str, str]]:
    (tmp_path / "test_tiny.py").write_text(TINY_TEST)
    xml = tmp_path / "junit.xml"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
                           "--rootdir", str(tmp_path), "-W", "error::pytest.PytestWarning", *extra,
                           str(tmp_path / "test_tiny.py")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    cases = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        cases[case.get("name")] = {p.get("name"): p.get("value") for p in case.iter("property")}
    return cases


@pytest.mark.parametrize("extra", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_scenario_figures_are_junit_properties_of_the_test_case(tmp_path, extra):
    cases = junit_properties(tmp_path, *extra)
    props = cases["test_scenario"]
    assert props["demo-overcommit.on.psi_full_stall_s"] == "1.92"
    assert props["demo-overcommit.off.psi_full_stall_s"] == "19.2"
    assert props["demo-overcommit.on.protected_items_per_s"] == "287.4"
    assert props["demo-overcommit.on.balloon_seconds_to_target"] == "15.9"
    assert props["demo-overcommit.on.oom_kills"] == "0"
    assert props["demo-overcommit.on.stops"] == "3"
    assert props["demo-overcommit.on.balloon_reached"] == "true"
    # Every key figure of both runs, and nothing else.
    summary = json.loads(FIXTURE.read_text())
    expected = {f"demo-overcommit.{mode}.{path}" for mode in ("off", "on") for path in key_figures(summary[mode])}
    assert set(props) == expected
    assert cases["test_plain"] == {}


def test_key_figures_of_a_per_guest_summary_keep_the_guest_in_their_name():
    summary = {"scenario": "two", "host": {"oom_kills": 1, "swap_used_mib": 80.0},
               "guests": [{"name": "a", "psi_full_stall_s": 2.5, "stops": 1, "left_stopped": []},
                          {"name": "b", "psi_full_stall_s": 0.4, "balloon_reached": False}]}
    assert key_figures(summary) == {"host.oom_kills": 1, "guests.a.psi_full_stall_s": 2.5, "guests.a.stops": 1,
                                    "guests.b.psi_full_stall_s": 0.4, "guests.b.balloon_reached": False}
