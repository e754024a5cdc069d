"""Scenario files: every shipped one parses; every mistake names the file and the key."""

import re
import subprocess
import sys

import pytest

from harness.errors import ConfigError
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
    (('target_mib = 600', 'target_mib = 4096'), "balloon[0].target_mib: expected at most the guest's memory_mib (1024)"),
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


MULTI = """
[scenario]
name = "two"
[host]
memory_budget_mib = 1536
host_swap = "file:512"
[policy]
kind = "mom"
interval_s = 2
[compare]
variants = ["schedule", "mom", "mom+intermediate"]
[[vm]]
name = "busy"
memory_mib = 1024
cpus = 1
balloon_start_mib = 600
free_page_reporting = true
[[vm]]
name = "idle"
memory_mib = 768
deflate_on_oom = true
stats_period_s = 2
intermediate = { enabled = false }
[intermediate]
stop_above = 15
[[workloads]]
vm = "busy"
name = "svc"
kind = "protected"
role = "protected"
[[workloads]]
vm = "idle"
name = "hog"
kind = "memhog"
role = "distinct"
[[balloon]]
vm = "idle"
at_s = 5
target_mib = 500
"""


def test_several_guests_each_with_its_workloads_steps_and_device_options():
    sc = parse_scenario(MULTI, "two.toml")
    busy, idle = sc.guests
    assert (busy.name, busy.cpus, busy.balloon_start_mib, busy.balloon_device.free_page_reporting) == \
        ("busy", 1, 600, True)
    assert (idle.memory_mib, idle.balloon_device.deflate_on_oom, idle.stats_period_s) == (768, True, 2)
    assert [w.name for w in busy.workloads] == ["svc"] and [w.name for w in idle.workloads] == ["hog"]
    assert busy.balloon == () and [s.target_mib for s in idle.balloon] == [500]
    # [intermediate] is every guest's default; a guest's own table overrides it.
    assert busy.intermediate.stop_above == 15 and idle.intermediate.stop_above == 15
    assert idle.intermediate_opt_out and not busy.intermediate_opt_out
    assert sc.host.memory_budget_mib == 1536 and str(sc.host.host_swap) == "file:512"
    assert sc.policy.kind.value == "mom" and sc.policy.interval_s == 2
    assert sc.variants == ("schedule", "mom", "mom+intermediate")


def test_the_single_vm_form_stays_valid():
    sc = parse_scenario(GOOD, "t.toml")
    assert [g.name for g in sc.guests] == ["vm"] and sc.vm is sc.guests[0]
    assert [w.name for w in sc.vm.workloads] == ["svc", "hog"] and sc.balloon[0].target_mib == 600


def test_with_several_guests_every_workload_and_step_names_its_guest():
    text = MULTI.replace('vm = "idle"\nname = "hog"', 'name = "hog"').replace('vm = "idle"\nat_s', 'vm = "nope"\nat_s')
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "two.toml")
    message = str(info.value)
    assert "2 mistakes" in message
    assert "workloads[1].vm: expected a value (a string), but the key is missing" in message
    assert "balloon[0].vm: expected the name of a [[vm]] (busy, idle), got 'nope'" in message


def test_every_mistake_is_reported_in_one_message():
    bad = (GOOD.replace("size_mib = 100", 'size_mib = "big"').replace("target_mib = 600", "target_mib = nan")
           .replace('name = "t"', 'name = "t"\ntime_limit_s = inf\ncolour = 1'))
    with pytest.raises(ScenarioError) as info:
        parse_scenario(bad, "t.toml")
    message = str(info.value)
    assert "t.toml: 4 mistakes:" in message
    for needle in ("workloads[1].args.size_mib: expected an integer, got 'big'",
                   "balloon[0].target_mib: expected a finite number (nan and inf are not allowed), got nan",
                   "scenario.time_limit_s: expected a finite number (nan and inf are not allowed), got inf",
                   "scenario.colour: expected no such key"):
        assert needle in message, message


@pytest.mark.parametrize("key,value", [
    ("hold_s", "nan"), ("stop_above", "inf"), ("resume_below", "-inf"), ("max_stopped_s", "nan")])
def test_nan_and_inf_are_refused_in_the_daemon_options(key, value):
    with pytest.raises(ScenarioError, match=rf"intermediate.{key}: expected a finite number"):
        parse_scenario(GOOD + f"\n[intermediate]\n{key} = {value}\n", "t.toml")


@pytest.mark.parametrize("args", ["rate_mib_s = nan", "hold_s = inf"])
def test_nan_and_inf_are_refused_in_workload_arguments(args):
    with pytest.raises(ScenarioError, match="finite number"):
        parse_scenario(GOOD.replace("size_mib = 100", f"size_mib = 100, {args}"), "t.toml")


@pytest.mark.parametrize("where,old,name", [
    ("scenario.name", 'name = "t"', "../../../../tmp/x"),
    ("scenario.name", 'name = "t"', "--help"),
    ("workloads[0].name", 'name = "svc"', "--help"),
    ("workloads[0].name", 'name = "svc"', "a b"),
    ("workloads[0].name", 'name = "svc"', "much-too-long-name"),
    ("workloads[0].name", 'name = "svc"', "café"),
])
def test_names_must_be_safe(where, old, name):
    with pytest.raises(ScenarioError, match=rf"{re.escape(where)}: expected a safe name"):
        parse_scenario(GOOD.replace(old, f"name = {name!r}".replace("'", '"'), 1), "t.toml")


@pytest.mark.parametrize("name", ["Busy", "host", "-x", "a_b"])
def test_vm_names_are_hostnames(name):
    with pytest.raises(ScenarioError, match=r"vm\[0\].name: expected"):
        parse_scenario(MULTI.replace('name = "busy"', f'name = "{name}"', 1), "two.toml")


def test_budget_and_policy_values_are_checked():
    bad = MULTI.replace('host_swap = "file:512"', 'host_swap = "zram:1"').replace('kind = "mom"', 'kind = "vmware"')
    bad = bad.replace('"mom+intermediate"]', '"mom+zswap"]').replace("balloon_start_mib = 600", "balloon_start_mib = 4000")
    with pytest.raises(ScenarioError) as info:
        parse_scenario(bad, "two.toml")
    message = str(info.value)
    for needle in ('host.host_swap: expected "none" or "file:MIB"', "policy.kind: expected one of schedule, mom",
                   "compare.variants: expected", "vm[0].balloon_start_mib: expected a number <= 1024"):
        assert needle in message, message


def test_variants_apply_policy_and_daemon():
    from harness.scenario.variants import parse_variant, parse_variants
    sc = parse_scenario(MULTI, "two.toml")
    on = parse_variant("mom+intermediate").apply(sc)
    assert on.policy.kind.value == "mom"
    assert [g.intermediate.enabled for g in on.guests] == [True, False]  # idle opted out
    off = parse_variant("schedule").apply(sc)
    assert off.policy.kind.value == "schedule" and not any(g.intermediate.enabled for g in off.guests)
    assert parse_variant("on").label == "balloon + Intermediate" and parse_variant("off").label == "balloon only"
    assert parse_variant("mom+intermediate").label == "MOM + Intermediate"
    assert [v.name for v in parse_variants(None, sc)] == ["schedule", "mom", "mom+intermediate"]
    assert [v.name for v in parse_variants(None, parse_scenario(GOOD))] == ["off", "on"]
    assert [v.name for v in parse_variants("mom,on", sc)] == ["mom", "on"]
    with pytest.raises(ConfigError, match="named twice"):
        parse_variants("mom,mom", sc)
    with pytest.raises(ConfigError, match="Unknown or repeated part 'mom'"):
        parse_variant("mom+mom")


def test_page_out_is_a_variant_of_its_own_and_off_in_the_papers_module():
    """"Intermediate" is the paper's module (a stopped unit stays in RAM); "pageout" adds our
    extension; the daemon's command line says which, whatever its own default."""
    from harness.scenario.variants import parse_variant
    sc = parse_scenario(GOOD)
    args = {name: parse_variant(name).apply(sc).vm.intermediate.options(()).argv()
            for name in ("on", "pageout", "intermediate+pageout")}
    assert "--no-page-out" in args["on"] and "--page-out" not in args["on"]
    assert "--page-out" in args["pageout"] and args["pageout"] == args["intermediate+pageout"]
    assert parse_variant("pageout").label == "Intermediate + page-out"
    assert not parse_variant("off").apply(sc).vm.intermediate.enabled
    demo = load_scenario(find_scenario("demo-overcommit"))
    assert list(demo.variants) == ["off", "on", "pageout"]


def test_scenario_error_is_exported():
    import harness
    assert harness.ScenarioError is ScenarioError
