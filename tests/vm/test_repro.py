"""A bug report's round trip on real guests, through the commands a user types: `run` a tiny
scenario whose expectation fails (exit 1, its table printed), `bundle` its folder, `repro`
the bundle (the same failure again, the original figures beside the new ones, no fact
differing on the same machine)."""

import os
import subprocess
import sys
import tarfile

TINY = """
[scenario]
name = "tiny-repro"
description = "one restored guest, a 64 MiB hog for two seconds"
time_limit_s = 60

[vm]
memory_mib = 1024
cpus = 2
swap = "file:512"

[[workloads]]
name = "hog"
kind = "memhog"
role = "distinct"
args = { size_mib = 64, rate_mib_s = 64, hold_s = 2 }

[intermediate]
enabled = false

[expect]
no_oom_kill = false           # the report's claim: a guest OOM kill (there is none: this fails)
nothing_left_stopped = true
"""


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          timeout=900, cwd=cwd, env={**os.environ, "COLUMNS": "200"})


def test_run_bundle_repro_round_trip(tmp_path):
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY)
    run = cli("run", str(scenario), "--runs", "runs", cwd=tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out  # an expectation failed
    assert "tiny-repro" in out and "guest OOM kills" in out and "FAIL no_oom_kill" in out, out
    [folder] = list((tmp_path / "runs").iterdir())
    assert (folder / "environment.json").is_file()

    made = cli("bundle", str(folder), "-o", "report.tar.gz", cwd=tmp_path)
    assert made.returncode == 0, made.stdout + made.stderr
    with tarfile.open(tmp_path / "report.tar.gz") as tar:
        names = set(tar.getnames())
    for name in ("bundle.json", "environment.json", "scenario.toml", "ledger.csv", "harness-events.jsonl",
                 "plot.png", "summary.json", "vm/dmesg.txt", "vm/serial.log", "vm/qmp.jsonl", "vm/cmdline.txt"):
        assert name in names, name

    repro = cli("repro", "report.tar.gz", "--runs", "again", cwd=tmp_path)
    out = repro.stdout + repro.stderr
    assert repro.returncode == 1, out  # the failure came back
    assert "the bundle's run vs now" in out and "original run" in out, out
    assert "Reproduced: the original run failed no_oom_kill; this run failed no_oom_kill." in out, out
    assert "Environment: every fact is the same." in out, out
    [again] = list((tmp_path / "again").iterdir())
    assert (again / "repro-of.json").is_file() and (again / "summary.json").is_file()
