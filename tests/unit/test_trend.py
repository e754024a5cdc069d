"""`balloon-harness trend`: nights of the demo scenario made from one recorded summary (its
measured figures varied as TCG varies them here, about 2x night to night), read back by the
real command in a subprocess."""

from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.figures import Direction, direction_of, flatten
from harness.trend import Flag, TrendSettings, assess, find_summaries, noise_band

FIXTURE = Path(__file__).parent / "fixtures" / "demo-overcommit-summary.json"
# What a run measures (the rest of a summary is the scenario's configuration).
MEASURED = ("balloon_seconds_to_target", "protected_items_per_s", "psi_full_stall_s", "psi_some_stall_s",
            "ssh_longest_silence_s", "longest_stopped_s")
# One factor per night for every measured figure, jittered +-15 % per figure: eight nights
# whose figures spread over 2x and more, as TCG on shared cores does.
HISTORY = (1.0, 0.7, 1.3, 0.8, 1.1, 0.75, 1.4, 0.9)
ORDINARY_LATEST = 1.35


def recorded() -> dict:
    return json.loads(FIXTURE.read_text())


def night(factor: float, seed: int, changes: dict[str, float] | None = None) -> dict:
    data = copy.deepcopy(recorded())
    rnd = random.Random(seed)
    for mode in ("off", "on"):
        for name in MEASURED:
            data[mode][name] = round(data[mode][name] * factor * rnd.uniform(0.85, 1.15), 2)
    for path, times in (changes or {}).items():
        mode, name = path.split(".")
        data[mode][name] = round(data[mode][name] * times, 2)
    return data


def write_nights(root: Path, latest: dict) -> list[Path]:
    nights = [night(f, i) for i, f in enumerate(HISTORY)] + [latest]
    folders = []
    for i, data in enumerate(nights):
        folder = root / f"202611{20 + i}-021700-demo-overcommit"
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps(data, indent=2))
        # A comparison's own runs sit below it with summaries of their own: not separate nights.
        for mode in ("off", "on"):
            (folder / mode).mkdir()
            (folder / mode / "summary.json").write_text(json.dumps(data[mode]))
        folders.append(folder)
    return folders


def trend(*args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "harness.cli", "trend", *map(str, args)],
                          capture_output=True, text=True, timeout=120, env=env)


def markdown_rows(output: str) -> dict[str, list[str]]:
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("| ") and cells[0] not in ("figure",):
            rows[cells[0]] = cells
    return rows


def flags(output: str) -> dict[str, str]:
    return {path: cells[-1].strip("*") for path, cells in markdown_rows(output).items() if cells[-1]}


# The protected service nearly stalled: ten times the PSI stall, a tenth of the throughput. (A
# fall to plain ballooning's 4x lower throughput is within what 2x noise allows in one night.)
INJECTED = {"on.psi_full_stall_s": 10.0, "on.protected_items_per_s": 0.1}


def test_trend_prints_each_figures_history_and_flags_the_injected_regression(tmp_path):
    folders = write_nights(tmp_path, night(1.0, 99, INJECTED))

    text = trend(*folders)
    assert text.returncode == 0, text.stderr
    history = [json.loads((f / "summary.json").read_text())["on"]["psi_full_stall_s"] for f in folders]
    row = next(line for line in text.stdout.splitlines() if "│ on.psi_full_stall_s " in line)
    assert " · ".join(f"{v:.4g}" for v in history) in row, row
    assert "REGRESSION" in row
    assert f"{len(HISTORY) + 1} runs" in text.stdout and folders[0].name in text.stdout and folders[-1].name in text.stdout

    md = trend("--format", "markdown", *folders)
    assert md.returncode == 0, md.stderr
    # Exactly the two injected figures, though every measured figure moved by up to 2x.
    assert flags(md.stdout) == {"on.psi_full_stall_s": "REGRESSION", "on.protected_items_per_s": "REGRESSION"}
    assert "**2 regression(s): on.protected_items_per_s, on.psi_full_stall_s**" in md.stdout or \
           "**2 regression(s): on.psi_full_stall_s, on.protected_items_per_s**" in md.stdout
    psi = markdown_rows(md.stdout)["on.psi_full_stall_s"]
    previous, latest = history[-2], history[-1]
    assert psi[3] == f"{(latest - previous) / previous * 100:+.0f} %"  # vs previous night

    assert trend("--fail-on-regression", *folders).returncode == 1
    # Only the latest run is judged: the same nights without the last have nothing to flag.
    assert flags(trend("--format", "markdown", *folders[:-1]).stdout) == {}


def test_ordinary_noise_is_not_flagged(tmp_path):
    folders = write_nights(tmp_path, night(ORDINARY_LATEST, 99))
    md = trend("--format", "markdown", *folders)
    assert md.returncode == 0, md.stderr
    assert flags(md.stdout) == {}
    assert "**0 regression(s)**" in md.stdout
    # The figures did move: they are rows of the table, not "unchanged".
    assert "on.psi_full_stall_s" in markdown_rows(md.stdout)
    assert trend("--fail-on-regression", *folders).returncode == 0


def test_an_improvement_is_not_a_regression(tmp_path):
    folders = write_nights(tmp_path, night(1.0, 99, {"on.psi_full_stall_s": 0.05}))
    md = trend("--format", "markdown", *folders)
    assert flags(md.stdout) == {"on.psi_full_stall_s": "improvement"}


def test_nothing_is_flagged_before_the_minimum_history(tmp_path):
    folders = write_nights(tmp_path, night(1.0, 99, INJECTED))
    md = trend("--format", "markdown", "--min-history", str(len(HISTORY) + 1), "--window", "20", *folders)
    assert set(flags(md.stdout).values()) == {"short history"}
    assert "**0 regression(s)**" in md.stdout
    md = trend("--format", "markdown", "--min-history", str(len(HISTORY)), *folders)
    assert flags(md.stdout)["on.psi_full_stall_s"] == "REGRESSION"


def test_summary_files_in_the_order_given_and_nested_per_guest_shapes(tmp_path):
    """Per-guest and host-wide figures (nested objects, guests as a named list) flatten by path."""
    files = []
    for i, factor in enumerate((*HISTORY, 1.2)):
        stall = round(2.0 * factor, 2) if i < len(HISTORY) else 30.0
        data = {"scenario": "two-guests", "mode": "on",
                "host": {"swap_used_mib": round(100 * factor, 1), "oom_kills": 0, "budget_mib": 2048},
                "guests": [{"name": "a", "psi_full_stall_s": round(1.5 * factor, 2), "reached": True},
                           {"name": "b", "psi_full_stall_s": stall, "left_stopped": []}]}
        path = tmp_path / f"night-{i}.json"
        path.write_text(json.dumps(data))
        files.append(path)
    md = trend("--format", "markdown", *files)
    assert md.returncode == 0, md.stderr
    assert "### two-guests (on)" in md.stdout
    assert flags(md.stdout) == {"guests.b.psi_full_stall_s": "REGRESSION"}
    assert "`host.budget_mib` = 2048" in md.stdout  # constant: listed once, not a row


def test_bad_input_gets_one_clear_error(tmp_path):
    bad = tmp_path / "summary.json"
    bad.write_text("{not json")
    for args, says in (([bad], "cannot read"), ([tmp_path / "nowhere"], "neither a summary JSON file nor a folder"),
                       (["--window", "0", bad], "must be positive")):
        result = trend(*args)
        assert result.returncode == 2 and says in result.stdout, result.stdout + result.stderr
        assert "Traceback" not in result.stderr


# == the pure parts ===============================================================================

def test_flatten_names_every_finite_number_by_path_and_ignores_the_rest():
    data = {"a": 1, "ok": True, "s": "x", "nan": float("nan"), "exit_status": 3, "nums": [1, 2],
            "steps": [{"t": 1.5}, {"t": 2.5}], "guests": [{"name": "g", "rss_mib": 3}], "deep": {"x": {"y": 0.5}}}
    assert flatten(data) == {"a": 1, "steps.0.t": 1.5, "steps.1.t": 2.5, "guests.g.rss_mib": 3, "deep.x.y": 0.5}
    assert set(flatten(recorded())) >= {"off.psi_full_stall_s", "on.protected_items_per_s", "on.oom_kills",
                                        "on.balloon_seconds_to_target", "on.stops"}


def test_directions_of_the_key_figures():
    assert direction_of("on.psi_full_stall_s") is Direction.LOWER
    assert direction_of("guests.a.oom_kills") is Direction.LOWER
    assert direction_of("off.balloon_seconds_to_target") is Direction.LOWER
    assert direction_of("on.protected_items_per_s") is Direction.HIGHER
    assert direction_of("on.stops") is Direction.UNKNOWN
    # make bench's JSON line
    for lower in ("cold_boot_s", "restore_ready_s", "qemu_rss_mib", "guest_reaction_ms_psi_trigger_median",
                  "guest_idle_cpu_percent", "cold_vs_naive"):
        assert direction_of(lower) is Direction.LOWER, lower
    assert direction_of("memory_mib") is Direction.UNKNOWN


def test_band_is_learnt_from_the_history_and_robust_to_one_wild_night():
    settings = TrendSettings()
    calm = noise_band([10.0, 10.5, 9.5, 10.2, 9.8], settings)
    noisy = noise_band([10.0, 20.0, 5.0, 14.0, 7.0], settings)
    assert calm.low > noisy.low and calm.high < noisy.high
    assert not calm.contains(14.0) and noisy.contains(14.0)
    wild = noise_band([10.0, 10.5, 9.5, 10.2, 500.0], settings)
    assert not wild.contains(30.0)  # one outlier does not widen the band to everything


def test_a_counter_that_was_always_zero_flags_its_first_event():
    fig = assess("on.oom_kills", [0, 0, 0, 0, 0, 0, 1], TrendSettings())
    assert fig.flag is Flag.REGRESSION
    assert assess("on.oom_kills", [0, 0, 0, 0, 0, 0, 0], TrendSettings()).flag is Flag.NONE


def test_find_summaries_takes_a_comparison_once(tmp_path):
    folders = write_nights(tmp_path, night(1.0, 7))
    assert find_summaries([tmp_path]) == [f / "summary.json" for f in folders]
    assert find_summaries([folders[0] / "on"]) == [folders[0] / "on" / "summary.json"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no summary.json"):
        find_summaries([tmp_path / "empty"])


def test_a_short_history_gets_a_wider_band_than_a_long_one_with_the_same_spread():
    """Five nights can look calm by chance: at the same spread, fewer nights mean a wider band."""
    settings = TrendSettings()
    five = noise_band([0.9, 1.0, 1.1, 0.95, 1.05], settings)
    ten = noise_band([0.9, 1.0, 1.1, 0.95, 1.05] * 2, settings)
    assert five.low < ten.low and five.high > ten.high
    assert five.contains(1.5) and not ten.contains(1.5)
