"""The accelerator is chosen from static facts, without a failed boot."""

import re
from pathlib import Path

import pytest

from harness.accel import TIMEOUT_SCALE, Accel, probe_kvm, resolve
from harness.config import Timeouts
from harness.errors import AccelUnavailable, ConfigError

README = Path(__file__).resolve().parents[2] / "README.md"


def make_root(tmp_path: Path, *, kvm_dev: bool = True, pvm: bool = False, flags: str = "fpu vmx sse") -> Path:
    """A fake / for probe_kvm: dev/kvm, sys/module and proc/cpuinfo as a host would have them."""
    (tmp_path / "dev").mkdir()
    (tmp_path / "proc").mkdir()
    (tmp_path / "sys/module").mkdir(parents=True)
    if kvm_dev:
        (tmp_path / "dev/kvm").write_text("")
    if pvm:
        (tmp_path / "sys/module/kvm_pvm").mkdir()
    (tmp_path / "proc/cpuinfo").write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    return tmp_path


HOSTS = {
    "vmx": {"flags": "fpu vmx sse"},
    "svm": {"flags": "fpu svm"},
    "kvm_pvm": {"pvm": True},
    "no-vmx-svm": {"flags": "fpu sse lm"},
    "no-dev-kvm": {"kvm_dev": False},
}


def test_kvm_pvm_is_never_usable(tmp_path):
    probe = probe_kvm(make_root(tmp_path, pvm=True))
    assert not probe.usable and "kvm_pvm" in probe.reason


def test_no_vmx_or_svm_is_not_usable(tmp_path):
    probe = probe_kvm(make_root(tmp_path, flags="fpu sse lm"))
    assert not probe.usable and "vmx" in probe.reason


def test_missing_dev_kvm(tmp_path):
    assert "does not exist" in probe_kvm(make_root(tmp_path, kvm_dev=False)).reason


def test_hardware_kvm_with_access_is_usable(tmp_path):
    assert probe_kvm(make_root(tmp_path, flags="fpu svm")).usable


@pytest.mark.parametrize("host, expected", [
    ("vmx", Accel.KVM), ("svm", Accel.KVM),
    ("kvm_pvm", Accel.TCG), ("no-vmx-svm", Accel.TCG), ("no-dev-kvm", Accel.TCG),
])
def test_auto_picks_kvm_exactly_where_it_is_usable(tmp_path, host, expected):
    root = make_root(tmp_path, **HOSTS[host])
    assert resolve("auto", root) is expected
    assert resolve(Accel.TCG, root) is Accel.TCG, "an explicit TCG is never second-guessed"


@pytest.mark.parametrize("host", ["vmx", "svm"])
def test_explicit_kvm_where_usable(tmp_path, host):
    assert resolve("kvm", make_root(tmp_path, **HOSTS[host])) is Accel.KVM


@pytest.mark.parametrize("host", ["kvm_pvm", "no-vmx-svm", "no-dev-kvm"])
def test_explicit_kvm_fails_fast_naming_the_cause(tmp_path, host):
    root = make_root(tmp_path, **HOSTS[host])
    with pytest.raises(AccelUnavailable) as info:
        resolve("kvm", root)
    message = str(info.value)
    assert probe_kvm(root).reason in message and "--vm-accel tcg" in message


def test_this_host_resolves_from_its_own_root():
    # Whatever this host is, auto and an explicit KVM agree with its probe (no boot needed).
    probe = probe_kvm()
    assert resolve("auto") is resolve("auto", Path("/"))
    if probe.usable:
        assert resolve("kvm") is Accel.KVM
    else:
        with pytest.raises(AccelUnavailable, match=re.escape(probe.reason)):
            resolve("kvm")


def test_unknown_accelerator_is_a_config_error():
    with pytest.raises(ConfigError, match="auto, kvm, tcg"):
        resolve("hvf")


def test_deadlines_scale_by_the_documented_tcg_factor(monkeypatch):
    # README: "every deadline scales with the accelerator (×6 on TCG; ...)".
    documented = re.search(r"\(×(\d+) on TCG", README.read_text())
    assert documented, "README no longer states the TCG deadline factor"
    factor = float(documented.group(1))
    assert TIMEOUT_SCALE == {Accel.KVM: 1.0, Accel.TCG: factor}
    monkeypatch.delenv("BALLOON_HARNESS_TIMEOUT_SCALE", raising=False)
    base, tcg, kvm = Timeouts(), Timeouts().scaled(Accel.TCG), Timeouts().scaled(Accel.KVM)
    assert (tcg.boot, tcg.command, tcg.shutdown) == (base.boot * factor, base.command * factor, base.shutdown * factor)
    assert tcg.qmp == base.qmp * factor / 2
    assert (kvm.boot, kvm.command, kvm.shutdown, kvm.qmp) == (base.boot, base.command, base.shutdown, base.qmp)
