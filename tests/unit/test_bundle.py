"""Repro bundles without a VM: a run folder packed and unpacked byte for byte, the facts of the
environment and their differences, the side-by-side table, and archives that must be refused
(a bundle is untrusted input)."""

import dataclasses
import io
import json
import os
import subprocess
import sys
import tarfile

import pytest
from rich.console import Console
from test_run_report import write_run

from harness.bundle import MANIFEST, UnsafeBundle, missing_items, open_bundle, write_bundle
from harness.envfacts import FACTS_FILE, EnvFacts, diff_facts, parse_cpu_model, parse_meminfo
from harness.errors import ConfigError
from harness.repro import facts_report, outcome, side_by_side
from harness.scenario.rebuild import build_report

FACTS = EnvFacts(harness_version="0.1.0", git_commit="abc", image="debian-bookworm", image_identity="f00",
                 guest_kernel="6.1.0-50-cloud-amd64", qemu_version="QEMU emulator version 7.2.22",
                 libvirt_version="9.0.0", backend="qemu", accel="tcg", host_kernel="6.18.0", cpu_model="Xeon",
                 cpu_count=2, host_memory_mib=24000, host_swap_mib=0)


def a_run(tmp_path, name="run", b_dies_at=12.0, facts=True):
    folder = write_run(tmp_path / name, b_dies_at=b_dies_at)
    build_report(folder)
    (folder / "a" / "serial.log").write_text("[    0.000000] Linux version 6.1.0-99-cloud-amd64 (debian)\n")
    (folder / "a" / "cmdline.txt").write_text("qemu-system-x86_64 -m 1024\n")
    (folder / "a" / "qmp.jsonl").write_text('{"execute": "balloon"}\n')
    (folder / "a" / "dmesg.txt").write_bytes(bytes(range(256)) * 40)  # any bytes survive
    (folder / "b" / "cmdline.txt").write_text("qemu-system-x86_64 -m 512\n")
    if facts:
        (folder / FACTS_FILE).write_text(FACTS.to_json())
    return folder


def files_of(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_run_folder_round_trips_byte_for_byte(tmp_path):
    folder = a_run(tmp_path)
    path, manifest = write_bundle(folder, tmp_path / "out" / "x.tar.gz")
    assert path == tmp_path / "out" / "x.tar.gz" and not path.with_name("x.tar.gz.tmp").exists()
    bundle = open_bundle(path, tmp_path / "unpacked")
    unpacked = files_of(tmp_path / "unpacked")
    assert unpacked.pop(MANIFEST) and unpacked == files_of(folder)
    assert bundle.runs == [tmp_path / "unpacked"] and bundle.facts == FACTS
    assert bundle.manifest["kind"] == "run" and bundle.manifest["runs"] == ["."]
    items = bundle.manifest["contents"]
    assert items["runs"]["."] == {"scenario": True, "run": True, "harness events": True, "host ledger": True,
                                  "ledger": True, "summary": True, "plot": True}
    assert items["vms"]["a"] == {"dmesg": True, "serial log": True, "QMP traffic": True, "command line": True,
                                 "libvirt XML": False}
    assert missing_items(bundle.manifest) == ["b: dmesg", "b: serial log", "b: QMP traffic"]


def test_a_compare_folder_keeps_each_variant_and_facts_at_the_top(tmp_path):
    compare = tmp_path / "cmp"
    compare.mkdir()
    a_run(compare, "mom")
    a_run(compare, "schedule", facts=False)
    bundle = open_bundle(write_bundle(compare, tmp_path / "c.tar.gz")[0], tmp_path / "u")
    assert bundle.manifest["kind"] == "runs" and bundle.manifest["runs"] == ["mom", "schedule"]
    assert bundle.runs == [tmp_path / "u" / "mom", tmp_path / "u" / "schedule"]
    assert bundle.facts == FACTS  # the first run's own


def test_facts_missing_from_the_folder_are_gathered_when_bundling_and_marked_so(tmp_path):
    folder = a_run(tmp_path, facts=False)
    bundle = open_bundle(write_bundle(folder, tmp_path / "b.tar.gz")[0], tmp_path / "u")
    facts = bundle.facts
    assert facts.gathered == "bundle" and facts.guest_kernel == "6.1.0-99-cloud-amd64"  # from the serial log
    assert facts.cpu_count == os.cpu_count() and facts.host_kernel == os.uname().release
    assert facts.host_memory_mib > 0


def test_an_artifact_folder_without_a_run_is_bundled_but_a_folder_of_nothing_is_refused(tmp_path):
    test_dir = tmp_path / "tests_vm_test_x.py__test_y" / "vm"
    test_dir.mkdir(parents=True)
    (test_dir / "serial.log").write_text("boot\n")
    bundle = open_bundle(write_bundle(tmp_path / "tests_vm_test_x.py__test_y", tmp_path / "t.tar.gz")[0],
                         tmp_path / "u")
    assert bundle.manifest["kind"] == "artifacts" and bundle.runs == []
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="neither a run"):
        write_bundle(tmp_path / "empty", tmp_path / "e.tar.gz")


def test_links_in_the_source_folder_are_not_followed(tmp_path):
    folder = a_run(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("not evidence")
    (folder / "a" / "link.txt").symlink_to(secret)
    (folder / "linkdir").symlink_to(tmp_path)
    bundle = open_bundle(write_bundle(folder, tmp_path / "l.tar.gz")[0], tmp_path / "u")
    names = files_of(bundle.root)
    assert "a/link.txt" not in names and not any(n.startswith("linkdir") for n in names)


# -- untrusted archives ---------------------------------------------------------------------------
def evil(tmp_path, *members, manifest=True):
    """A tar.gz from (TarInfo, bytes) pairs, with a valid manifest first."""
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        if manifest:
            data = json.dumps({"format": 1, "runs": []}).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info, data in members:
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(name, kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize("entry,why", [
    ((member("../outside.txt"), b"x"), "leads out"),
    ((member("a/../../outside.txt"), b"x"), "leads out"),
    ((member("/tmp/outside.txt"), b"x"), "absolute"),
    ((member("link", tarfile.SYMTYPE, "/etc/passwd"), None), "is a link"),
    ((member("link", tarfile.SYMTYPE, "inside.txt"), None), "is a link"),  # no links at all
    ((member("hard", tarfile.LNKTYPE, "/etc/passwd"), None), "is a link"),
    ((member("dev", tarfile.CHRTYPE), None), "not a plain file"),
    ((member("fifo", tarfile.FIFOTYPE), None), "not a plain file"),
])
def test_an_unsafe_entry_is_refused_and_nothing_lands_outside(tmp_path, entry, why):
    dest = tmp_path / "dest" / "u"
    with pytest.raises(UnsafeBundle, match=why):
        open_bundle(evil(tmp_path, entry), dest)
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "dest" / "outside.txt").exists()
    assert not os.path.lexists(dest / "link") and not os.path.lexists(dest / "hard")
    assert not os.path.exists("/tmp/outside.txt")


def test_a_repeated_name_is_refused(tmp_path):
    path = evil(tmp_path, (member("a.txt"), b"first"), (member("a.txt"), b"second"))
    with pytest.raises(UnsafeBundle, match="twice"):
        open_bundle(path, tmp_path / "u")
    assert (tmp_path / "u" / "a.txt").read_bytes() == b"first"


def test_size_and_count_limits(tmp_path):
    big = evil(tmp_path, (member("big.bin"), b"\0" * 3_000_000))  # 3 MB of zeros: a few KiB compressed
    assert big.stat().st_size < 100_000
    with pytest.raises(UnsafeBundle, match="a file"):
        open_bundle(big, tmp_path / "u1", max_file=1_000_000)
    with pytest.raises(UnsafeBundle, match="unpacks to more than"):  # the stream itself is cut off
        open_bundle(big, tmp_path / "u2", max_total=100_000)
    many = evil(tmp_path, *[(member(f"f{i}"), b"") for i in range(20)])
    with pytest.raises(UnsafeBundle, match="more than 10 entries"):
        open_bundle(many, tmp_path / "u3", max_members=10)
    assert open_bundle(many, tmp_path / "u4").manifest["runs"] == []


def test_not_a_bundle(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(os.urandom(2000))
    with pytest.raises(ConfigError, match="not a readable bundle"):
        open_bundle(junk, tmp_path / "u1")
    with pytest.raises(ConfigError, match="not a balloon-harness bundle"):
        open_bundle(evil(tmp_path, (member("x.txt"), b"x"), manifest=False), tmp_path / "u2")
    with pytest.raises(ConfigError, match="not a file"):
        open_bundle(tmp_path / "missing.tar.gz", tmp_path / "u3")


# -- facts ----------------------------------------------------------------------------------------
def test_facts_diff_names_what_differs_and_nothing_else():
    other = dataclasses.replace(FACTS, accel="kvm", host_swap_mib=1024, gathered="bundle")
    diffs = diff_facts(FACTS, other)
    assert [(d.name, d.label, d.original, d.now) for d in diffs] == [
        ("accel", "accelerator", "tcg", "kvm"), ("host_swap_mib", "host swap (MiB)", 0, 1024)]
    assert diff_facts(FACTS, FACTS) == []
    # Another version's bundle: unknown keys dropped, missing ones unknown.
    old = EnvFacts.from_dict({"harness_version": "0.0.9", "qemu_version": "8.2", "future_fact": 1})
    assert old.qemu_version == "8.2" and old.image is None
    assert {d.name for d in diff_facts(old, FACTS)} == {f.name for f in dataclasses.fields(EnvFacts)} - {"gathered"}
    assert EnvFacts.from_dict(json.loads(FACTS.to_json())) == FACTS


def test_facts_report_says_which_differ():
    console = Console(width=200, record=True)
    console.print(facts_report(FACTS, dataclasses.replace(FACTS, qemu_version="QEMU emulator version 8.2.2")))
    out = console.export_text()
    assert "QEMU" in out and "7.2.22" in out and "8.2.2" in out and "accelerator" not in out
    assert facts_report(FACTS, FACTS) == "Environment: every fact is the same."
    assert "nothing to compare" in facts_report(None, FACTS)


def test_host_facts_parsers():
    assert parse_meminfo("MemTotal:       24576000 kB\nSwapTotal:             0 kB\nHugePages_Total: 0\n") == \
        {"MemTotal": 24000, "SwapTotal": 0, "HugePages_Total": 0}
    assert parse_cpu_model("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)\n") == \
        "Intel(R) Xeon(R)"
    assert parse_cpu_model("processor : 0\n") is None


# -- side by side ---------------------------------------------------------------------------------
def test_side_by_side_sets_the_original_figures_beside_the_new_ones(tmp_path):
    original = build_report(write_run(tmp_path / "o")).summary  # b is killed: no_host_oom_kill fails
    new = build_report(write_run(tmp_path / "n", b_dies_at=99)).summary
    console = Console(width=250, record=True)
    console.print(side_by_side(original, new))
    out = console.export_text()
    assert "the bundle's run vs now" in out and "original run" in out and "now" in out
    row = next(line for line in out.splitlines() if "host · host OOM kills" in line)
    assert "1: b at 12.0 s" in row and row.rstrip(" │").endswith("0")
    expectations = next(line for line in out.splitlines() if "expectations" in line)
    assert "FAILED: no_host_oom_kill" in expectations and "all 2 passed" in expectations


def test_outcome_says_whether_the_failure_reproduced(tmp_path):
    def summary(*failed, checked=2):
        names = ["no_host_oom_kill", "host_budget_held"][:checked]
        return {"expectations": [{"name": n, "passed": n not in failed, "detail": ""} for n in names]}

    assert outcome(summary("no_host_oom_kill"), summary("no_host_oom_kill")).startswith("Reproduced")
    assert outcome(summary("no_host_oom_kill"), summary("no_host_oom_kill", "host_budget_held")) \
        .startswith("Reproduced")
    assert outcome(summary("no_host_oom_kill"), summary()).startswith("NOT reproduced")
    assert outcome(summary("no_host_oom_kill"), summary("host_budget_held")).startswith("Partly")
    assert outcome(summary(), summary("host_budget_held")).startswith("Different")
    assert outcome(summary(), summary()).startswith("Same outcome")
    assert outcome(summary(checked=0), summary(checked=0)).startswith("The scenario has no expectations")


# -- the commands, on a bundle that must be refused before any VM --------------------------------------
def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env={**os.environ, "COLUMNS": "200"})


def test_bundle_and_repro_commands_refuse_bad_input_clearly(tmp_path):
    folder = a_run(tmp_path)
    made = cli("bundle", str(folder), "-o", str(tmp_path / "ok.tar.gz"))
    assert made.returncode == 0 and "ok.tar.gz" in made.stdout and "b: dmesg" in made.stdout, made.stdout
    default = cli("bundle", str(folder), cwd=tmp_path)
    assert default.returncode == 0 and (tmp_path / "run.bundle.tar.gz").is_file(), default.stdout
    for args, text in ((("bundle", str(tmp_path / "nope")), "is not a folder"),
                       (("repro", str(evil(tmp_path, (member("../outside.txt"), b"x")))), "leads out"),
                       (("repro", str(write_bundle(folder / "a", tmp_path / "art.tar.gz")[0])),
                        "nothing to re-run")):
        proc = cli(*args, "--runs", str(tmp_path / "runs")) if args[0] == "repro" else cli(*args)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 2 and text in out and "Traceback" not in out, out
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "runs").exists()
