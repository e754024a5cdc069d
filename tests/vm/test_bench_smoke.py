"""`balloon-harness bench --quick` (every part once, short idle windows; no naive image, no
daemon or libvirt part):
it runs to the end and prints its figures, the last line one JSON object with the contract
keys. The figures are not judged here: `make bench` is where they are read."""

import json
import subprocess
import sys

import pytest

from harness.bench import CONTRACT_KEYS, QUICK_IDLE_WINDOW_S

# It starts four guests at once and times boots and restores: alone, like the tests that take
# figures (README, "Nightly CI").
pytestmark = pytest.mark.measure


def test_bench_runs_and_ends_with_its_json_line():
    done = subprocess.run([sys.executable, "-m", "harness.cli", "bench", "--quick", "--no-naive",
                           "--no-daemon", "--no-libvirt"], capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert list(figures)[:len(CONTRACT_KEYS)] == list(CONTRACT_KEYS)
    assert figures["accel"] in ("kvm", "tcg")
    # --quick: one of each, idle CPU over 2 s.
    assert len(figures["cold_boot_all_s"]) == len(figures["restore_ready_all_s"]) == 1
    assert figures["idle_window_s"] == QUICK_IDLE_WINDOW_S
    for key in ("cold_boot_s", "restore_ready_s", "restore_streamed_s", "rss_1_restored_mib", "rss_4_restored_mib"):
        assert figures[key] > 0, key
    assert figures["naive_boot_s"] is None and figures["daemon_reaction_guest_s"] is None  # skipped
    assert figures["libvirt_cold_boot_s"] is None
    assert any("cold boot" in line for line in lines[:-1]), "the human-readable table comes first"
