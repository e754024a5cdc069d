"""From a run folder to the summary, table and plot, without a VM: the folder is written the
way a run writes it (appended JSON lines), then cut short as a SIGKILL would leave it."""

import json

from rich.console import Console

from harness.scenario.evidence import HARNESS_EVENTS, HOST_LEDGER, RUN_META
from harness.scenario.rebuild import build_report
from harness.scenario.table import summary_table, verdict

SCENARIO = """
[scenario]
name = "pair"
[host]
memory_budget_mib = 1000
[[vm]]
name = "a"
memory_mib = 1024
[[vm]]
name = "b"
memory_mib = 512
[[workloads]]
vm = "a"
name = "svc"
kind = "protected"
role = "protected"
[[workloads]]
vm = "b"
name = "hog"
kind = "memhog"
role = "distinct"
[[balloon]]
vm = "a"
at_s = 2
target_mib = 640
ramp_s = 4
[expect]
host_budget_held = true
no_host_oom_kill = true
"""
T0 = 1_700_000_000.0


def write_run(folder, seconds=20.0, b_dies_at=12.0):
    folder.mkdir()
    (folder / "scenario.toml").write_text(SCENARIO)
    meta = {"scenario": "pair", "variant": "schedule", "t0": T0, "finished": True,
            "guests": {"a": {}, "b": {}}}
    (folder / RUN_META).write_text(json.dumps(meta))
    events = [{"t": T0 - 5, "event": "clock-offset", "vm": "a", "guest_minus_host_s": 100.0},
              {"t": T0 - 5, "event": "clock-offset", "vm": "b", "guest_minus_host_s": -3.0},
              {"t": T0 + b_dies_at, "event": "vm-died", "vm": "b", "reason": "QEMU exited with status -9",
               "host_oom_kill": True}]
    host, streams = [], {"a": [], "b": []}
    steps = int(seconds * 2)
    for i in range(steps + 1):
        t = T0 + i * 0.5
        usage = min(1000.0, 600 + 40 * i * 0.5)
        kills = 1 if i * 0.5 >= b_dies_at else 0
        host.append({"t": t, "vm": "host", "budget_mib": 1000, "budget_usage_mib": usage, "budget_peak_mib": 1000.0
                     if usage >= 1000 else usage, "budget_file_mib": 5.0, "host_oom_kills": kills})
        # The schedule's ramp 1024 -> 640 over 4 s from t=2, one target a second.
        target = 1024 if i * 0.5 < 2 else max(640, 1024 - 96 * int(i * 0.5 - 2 + 1))
        actual = max(640.0, 1024 - 80 * max(0.0, i * 0.5 - 2))
        host.append({"t": t, "vm": "a", "balloon_target_mib": target, "balloon_actual_mib": actual,
                     "qemu_rss_mib": 300 + i, "qemu_swap_mib": 0.0})
        streams["a"].append({"kind": "sample", "t": t + 100.0, "mem_total_mib": actual - 60, "oom_kill": 0,
                             "psi_some_total_us": i * 100_000, "psi_full_total_us": i * 50_000,
                             "progress": {"svc": {"items": i * 10}}})
        if i * 0.5 < b_dies_at:
            host.append({"t": t, "vm": "b", "balloon_actual_mib": 512.0, "qemu_rss_mib": 200 + 10 * i})
            streams["b"].append({"kind": "sample", "t": t - 3.0, "oom_kill": 0, "progress": {"hog": {"allocated_mib": i}}})
    streams["a"].append({"kind": "event", "source": "intermediate", "record": {"t": T0 + 105.0, "event": "stop",
                                                                              "pid": 9, "comm": "hog"}})
    (folder / HARNESS_EVENTS).write_text("".join(json.dumps(e) + "\n" for e in events))
    (folder / HOST_LEDGER).write_text("".join(json.dumps(r) + "\n" for r in host))
    for vm, lines in streams.items():
        (folder / vm).mkdir()
        (folder / vm / "guest-stream.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return folder


def test_a_complete_folder_gives_per_guest_and_host_figures(tmp_path):
    report = build_report(write_run(tmp_path / "run"))
    s = report.summary
    a, b = s["guests"]["a"], s["guests"]["b"]
    assert (a["balloon_min_mib"], a["balloon_final_mib"]) == (640.0, 640.0)
    assert a["balloon_steps"][0]["reached"] and a["balloon_steps"][0]["seconds_to_reach"] == 5.0
    assert a["psi_full_stall_s"] == 2.0 and a["stops"] == 1 and a["alive"]
    assert b["died"] == {"t_s": 12.0, "reason": "QEMU exited with status -9", "host_oom_kill": True}
    host = s["host"]
    assert host["peak_usage_mib"] == 1000.0 and host["budget_held"] is True
    assert host["host_oom_kills"] == 1 and host["killed_vms"] == [{"vm": "b", "t_s": 12.0, "host_oom_kill": True}]
    assert host["time_over_budget_s"] == 10.5  # usage at the limit from t=10 s on (each 0.5 s ending there)
    assert [e.name for e in report.expectations if not e.passed] == ["no_host_oom_kill"]
    # Guest samples are joined on host time through each guest's own clock offset.
    a_rows = [r for r in report.ledger.rows if r["vm"] == "a"]
    assert all(r["guest_mem_total_mib"] == r["balloon_actual_mib"] - 60 for r in a_rows)
    # The ramp's steps are in the ledger, not one jump.
    targets = sorted({r["balloon_target_mib"] for r in a_rows}, reverse=True)
    assert targets == [1024, 928, 832, 736, 640]
    plot = tmp_path / "run" / "plot.png"
    assert plot.stat().st_size > 20_000
    for name in ("ledger.csv", "ledger.json", "summary.json"):
        assert (tmp_path / "run" / name).exists()


def test_a_folder_cut_short_by_a_kill_still_gives_a_partial_table_and_plot(tmp_path):
    folder = write_run(tmp_path / "run")
    meta = json.loads((folder / RUN_META).read_text())
    meta["finished"] = False
    (folder / RUN_META).write_text(json.dumps(meta))
    text = (folder / HOST_LEDGER).read_text()
    (folder / HOST_LEDGER).write_text(text[: len(text) // 2] + '{"t": 1700000010.0, "vm": "a", "bal')  # cut mid-line
    (folder / "b" / "guest-stream.jsonl").unlink()
    report = build_report(folder)
    assert report.summary["complete"] is False
    assert report.summary["guests"]["a"]["balloon_min_mib"] is not None
    assert report.summary["guests"]["b"]["guest_samples"] == 0
    assert (folder / "plot.png").stat().st_size > 20_000
    console = Console(width=200, record=True)
    console.print(summary_table([report.summary]))
    out = console.export_text()
    assert "(PARTIAL)" in out and "a · balloon min / final (MiB)" in out and "host · host OOM kills (VM)" in out


def test_columns_per_variant_and_a_verdict(tmp_path):
    first = build_report(write_run(tmp_path / "one")).summary
    second = build_report(write_run(tmp_path / "two", b_dies_at=99)).summary
    second["label"] = "MOM"
    console = Console(width=250, record=True)
    console.print(summary_table([first, second]))
    out = console.export_text()
    assert "schedule vs MOM" in out
    assert "NO: died at 12.0 s (host OOM killer)" in out
    assert "better on host OOM kills" in verdict(first, second)


def cli(*args):
    import os
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})


def test_report_command_prints_the_table_and_fails_on_a_failed_expectation(tmp_path):
    compare = tmp_path / "cmp"
    compare.mkdir()
    write_run(compare / "mom", b_dies_at=99)
    write_run(compare / "schedule")
    meta = json.loads((compare / "mom" / RUN_META).read_text())
    (compare / "mom" / RUN_META).write_text(json.dumps({**meta, "variant": "mom"}))
    (compare / "summary.json").write_text(json.dumps({"variants": ["schedule", "mom"]}))
    proc = cli("report", str(compare))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out  # the schedule run's VM was killed: no_host_oom_kill failed
    assert "schedule vs MOM" in out and "Verdict: MOM did better on host OOM kills" in out, out
    assert json.loads((compare / "summary.json").read_text())["variants"] == ["schedule", "mom"]
    assert cli("report", str(compare / "mom")).returncode == 0
    empty = cli("report", str(tmp_path / "nothing-here"))
    assert empty.returncode == 2 and "holds no run" in empty.stdout and "Traceback" not in empty.stdout + empty.stderr


def test_scenarios_command_prints_where_each_file_is():
    from harness.scenario.model import shipped_scenarios
    out = cli("scenarios").stdout
    for name, path in shipped_scenarios().items():
        assert name in out and str(path) in out
