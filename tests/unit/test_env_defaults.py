"""Every BALLOON_HARNESS_* variable the README lists really changes its default: the VM options
in both the pytest plugin and the CLI (one definition, HarnessOptions.from_env), and the
paths, limits and binaries the harness reads at use time. A bad value is a clear error."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from harness.accel import Accel
from harness.cli import _options, build_parser
from harness.config import Timeouts
from harness.image.build import _mirror
from harness.image.cache import ImageCache
from harness.image.download import download_limit
from harness.image.recipe import Recipe
from harness.machine.qemu import qemu_binary
from harness.runtime import runtime_root
from harness.session import HarnessOptions

README = Path(__file__).resolve().parents[2] / "README.md"

#: A value for each option variable that differs from the built-in default.
OPTION_VALUES = {"ACCEL": "tcg", "IMAGE": "/images/other.qcow2", "MEMORY": "768", "CPUS": "1",
                 "SWAP": "zram:128", "BACKEND": "libvirt", "LIBVIRT_URI": "qemu:///session"}
EXPECTED_OPTIONS = dict(accel="tcg", image="/images/other.qcow2", memory_mib=768, cpus=1, swap="zram:128",
                        backend="libvirt", libvirt_uri="qemu:///session", fresh_boot=False)

INNER_TEST = '''
import json, os
from harness.pytest_plugin import _artifact_dir, options_from

def test_record(request):
    record = {**options_from(request.config).__dict__,
              "artifacts": str(_artifact_dir(request.config, "t").parent)}
    with open(os.environ["BH_OUT"], "w") as fh:
        json.dump(record, fh)
'''


def documented_variables() -> set[str]:
    """The variables of README's "Environment variables" table (`_IMAGE` is short for
    `BALLOON_HARNESS_IMAGE`)."""
    section = README.read_text().split("### Environment variables", 1)[1].split("\n#", 1)[0]
    names = set()
    for row in section.splitlines():
        if row.startswith("| `"):
            first_cell = row.split("|")[1]
            names |= {n if n.startswith("BALLOON") else "BALLOON_HARNESS" + n
                      for n in re.findall(r"`([A-Z_]+)`", first_cell)}
    return names


def inner_pytest(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    (tmp_path / "test_inner.py").write_text(INNER_TEST)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BALLOON_HARNESS_")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           f"--rootdir={tmp_path}", str(tmp_path / "test_inner.py")],
                          cwd=tmp_path, env={**clean, "BH_OUT": str(tmp_path / "out.json"), **env},
                          capture_output=True, text=True, timeout=120)


def cli_options(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], command: str = "boot") -> dict:
    for name in [k for k in os.environ if k.startswith("BALLOON_HARNESS_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return asdict(_options(build_parser().parse_args([command])))


def test_option_variables_set_the_defaults_of_pytest_and_the_cli_alike(tmp_path, monkeypatch):
    env = {f"BALLOON_HARNESS_{k}": v for k, v in OPTION_VALUES.items()}
    env["BALLOON_HARNESS_ARTIFACTS"] = str(tmp_path / "evidence")
    assert EXPECTED_OPTIONS != asdict(HarnessOptions())  # every value differs from the default
    assert all(EXPECTED_OPTIONS[f] != v for f, v in asdict(HarnessOptions()).items() if f != "fresh_boot")

    done = inner_pytest(tmp_path, env)
    assert done.returncode == 0, done.stdout + done.stderr
    seen = json.loads((tmp_path / "out.json").read_text())
    assert seen.pop("artifacts") == str(tmp_path / "evidence")
    assert seen == EXPECTED_OPTIONS, "pytest options"
    for command in ("boot", "bench", "demo"):
        assert cli_options(monkeypatch, env, command) == EXPECTED_OPTIONS, f"balloon-harness {command}"
    # Unset, both fall back to the built-in defaults.
    done = inner_pytest(tmp_path, {})
    assert done.returncode == 0, done.stdout + done.stderr
    seen = json.loads((tmp_path / "out.json").read_text())
    assert seen.pop("artifacts") == str(tmp_path / "artifacts")
    assert seen == asdict(HarnessOptions()) == cli_options(monkeypatch, {})


def test_command_line_options_win_over_the_variables(monkeypatch):
    monkeypatch.setenv("BALLOON_HARNESS_MEMORY", "768")
    monkeypatch.setenv("BALLOON_HARNESS_SWAP", "none")
    args = build_parser().parse_args(["boot", "--memory", "900", "--swap", "file:64"])
    assert (args.memory, args.swap) == (900, "file:64")


@pytest.mark.parametrize("variable,value,needle", [
    ("BALLOON_HARNESS_MEMORY", "big", "not a whole number"),
    ("BALLOON_HARNESS_CPUS", "2.5", "not a whole number"),
    ("BALLOON_HARNESS_SWAP", "disk:1", "none, file:MIB or zram:MIB"),
    ("BALLOON_HARNESS_BACKEND", "xen", "one of qemu, libvirt"),
    ("BALLOON_HARNESS_ACCEL", "hvf", "one of auto, kvm, tcg"),
])
def test_a_bad_variable_is_a_clear_error_in_both(tmp_path, variable, value, needle):
    cli = subprocess.run([sys.executable, "-m", "harness.cli", "boot"], capture_output=True, text=True,
                         env={**os.environ, variable: value}, timeout=60)
    assert cli.returncode == 2, cli.stdout + cli.stderr
    assert f"{variable}='{value}'" in cli.stdout or f"{variable}:" in cli.stdout, cli.stdout
    assert needle in cli.stdout and "Traceback" not in cli.stdout + cli.stderr
    inner = inner_pytest(tmp_path, {variable: value})
    assert inner.returncode == pytest.ExitCode.USAGE_ERROR, inner.stdout + inner.stderr
    assert variable in inner.stderr and needle in inner.stderr and "Traceback" not in inner.stderr


#: Variables read where they are used: each one's setting and what it changes.
USE_TIME = {
    "BALLOON_HARNESS_CACHE": ("/srv/bh-cache", lambda: ImageCache.default().root, Path("/srv/bh-cache")),
    "BALLOON_HARNESS_RUNTIME": (None, runtime_root, None),  # set to a fresh folder below
    "BALLOON_HARNESS_TIMEOUT_SCALE": ("2", lambda: Timeouts().scaled(Accel.TCG).boot, None),
    "BALLOON_HARNESS_MIRROR": ("http://mirror.example/debian", lambda: _mirror(Recipe.named()),
                               "http://mirror.example/debian"),
    "BALLOON_HARNESS_DOWNLOAD_LIMIT_MIB": ("64", download_limit, 64 << 20),
    "BALLOON_HARNESS_QEMU": ("/opt/qemu/bin/qemu-system-x86_64", qemu_binary, "/opt/qemu/bin/qemu-system-x86_64"),
}


@pytest.mark.parametrize("variable", sorted(USE_TIME))
def test_use_time_variables_change_what_they_name(variable, monkeypatch, tmp_path):
    setting, read, expected = USE_TIME[variable]
    monkeypatch.delenv(variable, raising=False)
    default = read()
    if variable == "BALLOON_HARNESS_RUNTIME":
        setting = expected = tmp_path / "runtime"
    if variable == "BALLOON_HARNESS_TIMEOUT_SCALE":
        expected = 2 * default
    monkeypatch.setenv(variable, str(setting))
    assert read() == expected != default


def test_every_documented_variable_is_checked_here():
    """A variable added to the README's table needs its check above."""
    checked = {f"BALLOON_HARNESS_{k}" for k in OPTION_VALUES} | {"BALLOON_HARNESS_ARTIFACTS"} | set(USE_TIME)
    documented = documented_variables()
    assert len(documented) >= 14, documented
    assert documented == checked
