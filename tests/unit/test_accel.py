"""The accelerator is chosen from static facts, without a failed boot."""

from pathlib import Path

import pytest

from harness.accel import Accel, probe_kvm, resolve
from harness.errors import AccelUnavailable, ConfigError


def make_root(tmp_path: Path, *, kvm_dev: bool = True, pvm: bool = False, flags: str = "fpu vmx sse") -> Path:
    (tmp_path / "dev").mkdir()
    (tmp_path / "proc").mkdir()
    (tmp_path / "sys/module").mkdir(parents=True)
    if kvm_dev:
        (tmp_path / "dev/kvm").write_text("")
    if pvm:
        (tmp_path / "sys/module/kvm_pvm").mkdir()
    (tmp_path / "proc/cpuinfo").write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    return tmp_path


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


def test_this_host_auto_matches_the_probe():
    # On these CI machines /dev/kvm is kvm_pvm: auto must say TCG; on a KVM runner, KVM.
    expected = Accel.KVM if probe_kvm().usable else Accel.TCG
    assert resolve("auto") is expected


def test_explicit_kvm_fails_fast_naming_the_cause():
    if probe_kvm().usable:
        assert resolve("kvm") is Accel.KVM
        return
    with pytest.raises(AccelUnavailable) as info:
        resolve("kvm")
    message = str(info.value)
    assert probe_kvm().reason in message and "--vm-accel tcg" in message


def test_unknown_accelerator_is_a_config_error():
    with pytest.raises(ConfigError, match="auto, kvm, tcg"):
        resolve("hvf")
