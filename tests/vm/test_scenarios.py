"""Scenarios end to end on real guests: the short overcommit scenario on both backends,
several guests on a real host memory budget under the MOM policy, the host OOM killer
taking a guest over the budget, free page reporting on and off, and a run killed with
SIGKILL whose folder still gives a (partial) table and plot. They measure (ledger, stalls,
throughput, host budget): they run alone, never beside other guests under xdist."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness.config import BalloonDevice
from harness.host.reap import leftover_cgroups
from harness.host.swap import active_swaps
from harness.scenario.evidence import HOST_LEDGER, read_jsonl
from harness.scenario.model import parse_scenario
from harness.waiting import wait_for

pytestmark = pytest.mark.measure


def rows_of(folder: Path, vm: str) -> list[dict]:
    return [r for r in csv.DictReader((folder / "ledger.csv").open()) if r["vm"] == vm]


def number(value: str) -> float | None:
    return float(value) if value not in ("", None) else None


def no_budget_leftovers(run_id: str) -> list[Path]:
    return leftover_cgroups({run_id})


@pytest.mark.parametrize("vm_backend", ["qemu", "libvirt"])
def test_short_scenario_meets_its_expectations(run_scenario, vm_backend, request):
    result = run_scenario("short-overcommit")
    summary = result.summary
    assert result.passed, [f"{e.name}: {e.detail}" for e in result.failures()]
    assert result.mode == "scenario" and summary["intermediate"]
    # The squeeze was real and the daemon acted on it: it stopped the hog (only the hog).
    assert summary["stops"] >= 1 and summary["resumes"] >= summary["stops"]
    assert summary["protected_stops"] == []
    assert summary["balloon_reached"] and summary["balloon_target_mib"] == 640
    assert summary["protected_items_per_s"] > 0

    folder = result.folder
    for name in ("scenario.toml", "run.json", "ledger.csv", "ledger.json", "ledger-host.jsonl", "plot.png",
                 "summary.json", "harness-events.jsonl", "vm/guest-stream.jsonl", "vm/intermediate-events.jsonl",
                 "vm/dmesg.txt", "vm/serial.log", "vm/workload-service.jsonl", "vm/final.json"):
        assert (folder / name).exists(), name
    assert (folder / "plot.png").stat().st_size > 20_000
    rows = rows_of(folder, "vm")
    assert len(rows) > 60  # about two samples a second over a minute and more
    with_guest = [r for r in rows if r["guest_mem_total_mib"]]
    assert len(with_guest) > len(rows) / 2, "the guest's samples arrived through the evidence port"
    # The balloon's effect is visible from inside: MemTotal fell while the target was 640.
    assert min(float(r["guest_mem_total_mib"]) for r in with_guest) < 700
    assert max(float(r["daemon_stopped"] or 0) for r in rows) >= 1
    # The ramp 1024 -> 640 over 4 s is a staircase in the ledger, not one jump.
    targets = sorted({number(r["balloon_target_mib"]) for r in rows} - {None}, reverse=True)
    assert [round(t) for t in targets[:5]] == [1024, 928, 832, 736, 640], targets
    # The daemon's events streamed out of the guest as the run went, not only at the end.
    stream = read_jsonl(folder / "vm" / "guest-stream.jsonl")
    assert any(r.get("kind") == "event" and r["record"].get("event") == "stop" for r in stream)
    assert json.loads((folder / "summary.json").read_text())["guests"]["vm"]["stops"] == summary["stops"]
    # The key figures are the test's JUnit properties.
    properties = dict(request.node.user_properties)
    assert properties[f"short-overcommit.{result.mode}.stops"] == summary["stops"]
    assert properties[f"short-overcommit.{result.mode}.psi_full_stall_s"] == summary["psi_full_stall_s"]
    assert properties[f"short-overcommit.{result.mode}.balloon_reached"] == "true"


TWO_GUESTS = """
[scenario]
name = "mom-pair"
time_limit_s = 120
[host]
memory_budget_mib = {budget}
host_swap = "none"
[policy]
kind = "mom"
interval_s = 1
history = 4
[[vm]]
name = "idle"
memory_mib = 768
cpus = 1
swap = "none"
[[vm]]
name = "busy"
memory_mib = 768
cpus = 1
swap = "none"
balloon_start_mib = 448
[[workloads]]                       # a burst long over: its pages stay resident on the host
vm = "idle"
name = "burst"
kind = "memhog"
role = "distinct"
args = {{ size_mib = 320, rate_mib_s = 160, hold_s = 1 }}
[[workloads]]                       # the busy guest's working set grows after that
vm = "busy"
name = "grow"
kind = "memhog"
role = "protected"
start_at_s = 8
args = {{ size_mib = 300, rate_mib_s = 12, hold_s = 20 }}
[expect]
host_budget_held = true
"""


def test_mom_moves_memory_from_the_idle_guest_to_the_busy_one(run_scenario, vm_factory):
    result = run_scenario(parse_scenario(TWO_GUESTS.format(budget=1100), "mom-pair.toml"))
    assert result.passed, [f"{e.name}: {e.detail}" for e in result.failures()]
    idle, busy = result.summary["guests"]["idle"], result.summary["guests"]["busy"]
    # Read from the ledger: the idle guest's balloon shrank, the busy guest's grew past its start.
    idle_actual = [number(r["balloon_actual_mib"]) for r in rows_of(result.folder, "idle")]
    busy_actual = [number(r["balloon_actual_mib"]) for r in rows_of(result.folder, "busy")]
    assert min(a for a in idle_actual if a) < 768 * 0.85, idle
    assert max(a for a in busy_actual if a) > 448 + 100, busy
    # Causality, from the policy's own log: the idle guest was shrunk under host pressure.
    events = read_jsonl(result.folder / "harness-events.jsonl")
    shrinks = [e for e in events if e.get("event") == "balloon-target" and e["vm"] == "idle"
               and e["reason"].startswith("shrink")]
    grows = [e for e in events if e.get("event") == "balloon-target" and e["vm"] == "busy"
             and e["reason"].startswith("grow")]
    assert shrinks and grows
    host = result.summary["host"]
    assert host["peak_usage_mib"] <= 1100 and host["host_oom_kills"] == 0
    assert not no_budget_leftovers(vm_factory.run.run_id), "the budget cgroup outlived the run"


OVER_BUDGET = """
[scenario]
name = "over-budget"
time_limit_s = 90
[host]
memory_budget_mib = 640
host_swap = "none"
[vm]
name = "victim"
memory_mib = 1024
cpus = 1
swap = "none"
[[workloads]]
name = "hog"
kind = "memhog"
role = "distinct"
args = { size_mib = 700, rate_mib_s = 100, hold_s = 30 }
[expect]
no_host_oom_kill = false
host_budget_held = true
"""


@pytest.mark.parametrize("vm_backend", ["qemu", "libvirt"])
def test_a_guest_over_the_budget_without_host_swap_is_killed_and_reported(run_scenario, vm_factory, vm_backend):
    result = run_scenario(parse_scenario(OVER_BUDGET, "over-budget.toml"))
    assert result.passed, [f"{e.name}: {e.detail}" for e in result.failures()]
    host = result.summary["host"]
    assert host["host_oom_kills"] == 1
    assert [k["vm"] for k in host["killed_vms"]] == ["victim"] and host["killed_vms"][0]["host_oom_kill"]
    victim = result.summary["guests"]["victim"]
    assert victim["died"]["host_oom_kill"]
    if vm_backend == "qemu":
        assert "-9" in victim["died"]["reason"]  # SIGKILL, from the OOM killer
    assert host["peak_usage_mib"] <= 640
    # The harness lived to write the whole run folder; nothing of the budget is left.
    assert (result.folder / "plot.png").exists() and result.summary["complete"]
    assert not no_budget_leftovers(vm_factory.run.run_id)
    events = read_jsonl(result.folder / "harness-events.jsonl")
    final = next(e for e in events if e.get("event") == "budget-final")
    assert final["pids_left"] == []
    if vm_backend == "qemu":
        # The budget cgroup's own counter. Under libvirt the kill happens in the domain's child
        # group, whose v1 counter leaves with it: there the kernel log (above) names the kill.
        assert final["oom_kills"] == 1


# Touches 400 MiB, says so, holds it until /tmp/release appears, exits (freeing it).
ALLOCATE_HOLD_FREE = ("nohup python3 -c 'import os, time\nb = bytearray(400 << 20)\n"
                      "for i in range(0, len(b), 4096): b[i] = 1\nopen(\"/tmp/touched\", \"w\").close()\n"
                      "while not os.path.exists(\"/tmp/release\"): time.sleep(0.2)\n"
                      "open(\"/tmp/freed\", \"w\").close()' </dev/null >/dev/null 2>&1 &")


def test_free_page_reporting_gives_freed_memory_back_to_the_host(vm_factory):
    machines = {}
    for reporting in (True, False):
        name = "fpr-on" if reporting else "fpr-off"
        machines[reporting] = vm_factory.start(name=name, memory_mib=1024, cpus=1,
                                               balloon=BalloonDevice(free_page_reporting=reporting))
    before = {k: m.host_rss_mib() for k, m in machines.items()}
    for machine in machines.values():
        machine.ssh.run(ALLOCATE_HOLD_FREE)
    for machine in machines.values():  # readiness: the guest says its pages are touched
        wait_for(lambda m=machine: m.ssh.run("test -e /tmp/touched", check=False).ok or None,
                 timeout=machine.timeouts.command, interval=0.5, what=f"{machine.name} to touch 400 MiB")
    peak = {k: m.host_rss_mib() for k, m in machines.items()}
    for k in machines:  # both hosts hold the 400 MiB now
        assert peak[k] - before[k] > 300, (before, peak)
    for machine in machines.values():
        machine.ssh.run("touch /tmp/release")
    for machine in machines.values():
        wait_for(lambda m=machine: m.ssh.run("test -e /tmp/freed", check=False).ok or None,
                 timeout=machine.timeouts.command, interval=0.5, what=f"{machine.name} to free its 400 MiB")

    # Readiness: the reporting guest's QEMU gave most of it back (reports come in ~2 s passes).
    def given_back():
        return peak[True] - machines[True].host_rss_mib() >= 0.7 * 400 or None

    wait_for(given_back, timeout=machines[True].timeouts.command * 3, interval=0.5,
             what="the host RSS of the guest with free page reporting to fall by 280 MiB")
    # Over the same time the other guest's QEMU kept the freed pages.
    assert peak[False] - machines[False].host_rss_mib() < 0.3 * 400, (peak, machines[False].host_rss_mib())


KILLED = """
[scenario]
name = "killed-midway"
time_limit_s = 300
[host]
memory_budget_mib = 1024
host_swap = "file:64"
[vm]
memory_mib = 768
cpus = 1
swap = "none"
[[workloads]]
name = "service"
kind = "protected"
role = "protected"
args = { workers = 1, working_set_mib = 40, duration_s = 200 }
[[balloon]]
at_s = 5
target_mib = 512
ramp_s = 4
"""


@pytest.fixture
def own_runtime():
    """A runtime folder of this test's own (short: QMP socket paths are limited to 107 bytes),
    so that its `reap` sees only the run it killed."""
    path = Path(tempfile.mkdtemp(prefix="bh-rt-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_run_killed_with_sigkill_leaves_a_folder_that_report_rebuilds(tmp_path, own_runtime):
    scenario = tmp_path / "killed.toml"
    scenario.write_text(KILLED)
    env = {**os.environ, "BALLOON_HARNESS_RUNTIME": str(own_runtime), "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(scenario), "--runs", str(tmp_path / "runs")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def folder_with_ledger():
            folders = list((tmp_path / "runs").glob("*-killed-midway"))
            if proc.poll() is not None:
                return "exited"
            if not folders:
                return None
            rows = read_jsonl(folders[0] / HOST_LEDGER)
            stream = folders[0] / "vm" / "guest-stream.jsonl"
            # Twelve seconds of samples, the schedule's ramp among them, and the guest's own.
            return folders[0] if rows and rows[-1]["t"] - rows[0]["t"] > 12 and stream.exists() and \
                stream.stat().st_size > 0 else None

        folder = wait_for(folder_with_ledger, timeout=600, interval=0.5, what="the run to record 12 s of ledger")
        assert folder != "exited", proc.communicate()[0]
        runtime_runs = list((own_runtime / "runs").iterdir())
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(runtime_runs) == 1
    run_id = runtime_runs[0].name
    swap_file = next(runtime_runs[0].glob("bh-swap-*.img"))
    # What SIGKILL left on the host: the budget cgroup and the swap file (QEMU died with us).
    assert leftover_cgroups({run_id}) and swap_file in {e.path for e in active_swaps()}

    report = subprocess.run([sys.executable, "-m", "harness.cli", "report", str(folder)], env=env,
                            capture_output=True, text=True, timeout=300)
    out = report.stdout + report.stderr
    assert "Traceback" not in out, out
    assert "PARTIAL" in out and "balloon min / final (MiB)" in out, out
    assert (folder / "plot.png").stat().st_size > 20_000
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["complete"] is False and summary["guests"]["vm"]["balloon_min_mib"] < 700
    assert summary["host"]["peak_usage_mib"] > 0

    reap = subprocess.run([sys.executable, "-m", "harness.cli", "reap", "--no-libvirt"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert reap.returncode == 0, reap.stdout + reap.stderr
    assert "removed cgroup" in reap.stdout and "removed swap file" in reap.stdout, reap.stdout
    assert not leftover_cgroups({run_id})
    assert swap_file not in {e.path for e in active_swaps()}
    assert folder.exists(), "the run's evidence is kept"
