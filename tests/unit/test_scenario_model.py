"""Scenario files: every shipped one parses; every mistake names the file and the key."""

import subprocess
import sys

import pytest

from harness.scenario.model import (
    ScenarioError,
    find_scenario,
    load_scenario,
    parse_scenario,
    shipped_scenarios,
)
from harness.workloads import Role

GOOD = """
[scenario]
name = "t"
[[workloads]]
name = "svc"
kind = "protected"
role = "protected"
args = { workers = 2 }
[[workloads]]
name = "hog"
kind = "memhog"
role = "distinct"
args = { size_mib = 100 }
[[balloon]]
at_s = 5
target_mib = 600
"""


@pytest.mark.parametrize("name", sorted(shipped_scenarios()))
def test_shipped_scenarios_parse(name):
    scenario = load_scenario(shipped_scenarios()[name])
    assert scenario.name == name
    assert scenario.protected, "every shipped scenario has a protected workload"
    assert any(w.role is Role.DISTINCT for w in scenario.workloads)


def test_minimal_scenario_defaults():
    scenario = parse_scenario(GOOD, "t.toml")
    assert scenario.vm.memory_mib == 1024 and str(scenario.vm.swap) == "file:1024"
    assert scenario.intermediate.enabled and scenario.intermediate.stop_above == 20
    assert [w.cgroup for w in scenario.protected] == ["/bhworkloads.slice/bh-wl-svc.service"]


@pytest.mark.parametrize("change,needle", [
    (('size_mib = 100', 'size_mib = "big"'), 't.toml: workloads[1].args.size_mib: expected an integer, got \'big\''),
    (('size_mib = 100', 'size_mb = 100'), "workloads[1].args.size_mb: expected no such key"),
    (('kind = "memhog"', 'kind = "hogg"'), "workloads[1].kind: expected one of memhog, protected, stress-ng"),
    (('target_mib = 600', 'target_mib = 4096'), "balloon[0].target_mib: expected at most vm.memory_mib (1024)"),
    (('name = "svc"', 'name = "hog"'), "workloads[1].name: expected a name not used by another workload"),
    (('[scenario]\nname = "t"', '[scenario]'), "scenario.name: expected a value (a string), but the key is missing"),
    (('at_s = 5', 'at_s = -1'), "balloon[0].at_s: expected a number >= 0"),
    (('[[balloon]]', '[intermediate]\nresume_below = 30\n[[balloon]]'), "intermediate.resume_below: expected at most stop_above"),
    (('[[balloon]]', 'colour = "red"\n[[balloon]]'), "colour: expected no such key"),
])
def test_errors_name_file_and_key(change, needle):
    with pytest.raises(ScenarioError) as info:
        parse_scenario(GOOD.replace(*change), "t.toml")
    assert needle in str(info.value)
    assert "Fix:" in str(info.value)


def test_broken_toml_syntax():
    with pytest.raises(ScenarioError, match=r"t.toml: not valid TOML"):
        parse_scenario(GOOD + "\n[[workloads]\n", "t.toml")


def test_unknown_scenario_name_lists_the_shipped_ones():
    with pytest.raises(ScenarioError, match="demo-overcommit"):
        find_scenario("no-such-scenario")


def test_cli_reports_a_broken_file_in_one_paragraph(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace("size_mib = 100", "size_mib = -5.5"))
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    assert "bad.toml: workloads[1].args.size_mib: expected an integer" in out
    assert "Traceback" not in out
