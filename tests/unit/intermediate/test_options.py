"""The host's way to the daemon's new options: a scenario's [intermediate] `page_out` and
`min_rss_mib`, IntermediateOptions.argv, and the daemon's own command line that reads them."""

from __future__ import annotations

import pytest

from harness.guest.intermediate.cli import build_parser, config_from_args
from harness.intermediate import IntermediateOptions
from harness.scenario.model import ScenarioError, load_scenario, parse_scenario
from harness.scenario.model import find_scenario as find

BASE = load_scenario(find("demo-overcommit")).text


def with_intermediate(lines: str) -> str:
    return BASE.replace("[intermediate]\n", "[intermediate]\n" + lines + "\n", 1)


def daemon_config(options: IntermediateOptions):
    return config_from_args(build_parser().parse_args(["run", *options.argv()]))


def test_defaults_leave_the_daemons_own_defaults():
    options = parse_scenario(BASE).intermediate.options(())
    assert "--page-out" not in options.argv() and "--no-page-out" not in options.argv()
    config = daemon_config(options)
    assert config.page_out is True and config.min_rss_kb == 16 * 1024


@pytest.mark.parametrize("text, page_out, min_rss_kb", [
    ("page_out = false", False, 16 * 1024),
    ("page_out = true\nmin_rss_mib = 0", True, 0),
    ("min_rss_mib = 64", True, 64 * 1024),
])
def test_a_scenario_reaches_the_daemon(text, page_out, min_rss_kb):
    config = daemon_config(parse_scenario(with_intermediate(text)).intermediate.options(()))
    assert (config.page_out, config.min_rss_kb) == (page_out, min_rss_kb)


@pytest.mark.parametrize("text, key", [('page_out = "no"', "page_out"), ("min_rss_mib = -1", "min_rss_mib")])
def test_bad_values_name_the_key(text, key):
    with pytest.raises(ScenarioError, match=key):
        parse_scenario(with_intermediate(text))
