"""Sharding with pytest-split from the durations file kept in the repository: two shards,
each collected by a real pytest (as a nightly runner would run it), together run every test
exactly once; and the shards are balanced by the recorded durations."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pytest_split", reason="pytest-split is not installed: pip install -e '.[dev]'")

ROOT = Path(__file__).resolve().parents[2]
DURATIONS = ROOT / ".test_durations"


@functools.cache  # each collection is a pytest run of a few seconds; the tests share them
def collected(*args: str) -> tuple[str, ...]:
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "--durations-path", str(DURATIONS), *args, "tests"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return tuple(line for line in done.stdout.splitlines() if "::" in line and not line.startswith(" "))


@pytest.mark.parametrize("select", [(), ("-m", "not measure")], ids=["whole-suite", "parallel-safe"])
def test_two_shards_run_every_test_exactly_once(select):
    everything = collected(*select)
    shards = [collected(*select, "--splits", "2", "--group", str(group), "--splitting-algorithm", "least_duration")
              for group in (1, 2)]
    assert all(shards), "both shards have tests"
    together = [*shards[0], *shards[1]]
    assert len(together) == len(set(together)), "no test in both shards"
    assert sorted(together) == sorted(everything), "no test in neither"


def test_the_durations_file_balances_the_shards():
    """By the recorded durations (pytest-split gives a test it has no duration for the mean of
    the others), the two shards differ by no more than the longest single test."""
    everything = collected()
    recorded = json.loads(DURATIONS.read_text())
    known = {t: recorded[t] for t in everything if t in recorded}
    assert known, "the durations file names tests of this suite"
    mean = sum(known.values()) / len(known)
    shards = [collected("--splits", "2", "--group", str(g), "--splitting-algorithm", "least_duration")
              for g in (1, 2)]
    totals = [sum(known.get(t, mean) for t in shard) for shard in shards]
    assert abs(totals[0] - totals[1]) <= max(known.values()), totals


def test_each_shard_records_only_its_own_durations_so_the_nightly_merge_is_the_whole_suite(tmp_path):
    """The nightly refresh: every shard (under xdist, as the nightly runs it) splits by a copy of
    the recorded file and writes back, with --clean-durations, only the tests it ran; the report
    job's `jq -s add` of the shards' files is then every test once, with tonight's time."""
    (tmp_path / "test_tiny.py").write_text("import pytest\n\n@pytest.mark.parametrize('n', range(8))\n"
                                           "def test_n(n):\n    pass\n")
    recorded = {f"test_tiny.py::test_n[{n}]": 100.0 + n for n in range(8)}
    merged: dict[str, float] = {}
    for group in (1, 2):
        shard_file = tmp_path / f"durations-{group}.json"
        shard_file.write_text(json.dumps(recorded))
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
                               "--splits", "2", "--group", str(group), "--splitting-algorithm", "least_duration",
                               "--durations-path", str(shard_file), "--store-durations", "--clean-durations",
                               "--rootdir", str(tmp_path), "test_tiny.py"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        mine = json.loads(shard_file.read_text())
        assert len(mine) == 4 and not set(mine) & set(merged), mine
        assert all(seconds < 100 for seconds in mine.values()), "tonight's times, not the recorded ones"
        merged |= mine
    assert set(merged) == set(recorded)
