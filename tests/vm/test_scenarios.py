"""One short overcommit scenario end to end, with its expectations checked, on both backends.
It measures (ledger, stalls, throughput): it runs alone, never beside other guests under xdist."""

import csv
import json

import pytest

pytestmark = pytest.mark.measure


@pytest.mark.parametrize("vm_backend", ["qemu", "libvirt"])
def test_short_scenario_meets_its_expectations(run_scenario, vm_backend, request):
    result = run_scenario("short-overcommit")
    summary = result.summary
    assert result.passed, [f"{e.name}: {e.detail}" for e in result.failures()]
    assert result.mode == "on"
    # The squeeze was real and the daemon acted on it: it stopped the hog (only the hog).
    assert summary["stops"] >= 1 and summary["resumes"] >= summary["stops"]
    assert summary["protected_stops"] == []
    assert summary["balloon_reached"] and summary["balloon_target_mib"] == 640
    assert summary["protected_items_per_s"] > 0

    folder = result.folder
    for name in ("scenario.toml", "ledger.csv", "ledger.json", "plot.png", "summary.json",
                 "intermediate-events.jsonl", "harness-events.jsonl", "dmesg.txt", "workload-service.jsonl"):
        assert (folder / name).exists(), name
    assert (folder / "plot.png").stat().st_size > 20_000
    rows = list(csv.DictReader((folder / "ledger.csv").open()))
    assert len(rows) > 60  # about two samples a second over a minute and more
    with_guest = [r for r in rows if r["guest_mem_total_mib"]]
    assert len(with_guest) > len(rows) / 2
    # The balloon's effect is visible from inside: MemTotal fell while the target was 640.
    assert min(float(r["guest_mem_total_mib"]) for r in with_guest) < 700
    assert max(float(r["daemon_stopped"] or 0) for r in rows) >= 1
    assert json.loads((folder / "summary.json").read_text())["mode"] == "on"
    # The key figures are the test's JUnit properties.
    properties = dict(request.node.user_properties)
    assert properties["short-overcommit.on.stops"] == summary["stops"]
    assert properties["short-overcommit.on.psi_full_stall_s"] == summary["psi_full_stall_s"]
    assert properties["short-overcommit.on.balloon_reached"] == "true"
