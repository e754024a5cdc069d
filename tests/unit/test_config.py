import pytest

from harness.accel import Accel
from harness.config import SwapKind, SwapSpec, Timeouts, VMSpec
from harness.errors import ConfigError


@pytest.mark.parametrize("text,kind,size", [("none", SwapKind.NONE, 0), ("file:512", SwapKind.FILE, 512),
                                            ("ZRAM:64", SwapKind.ZRAM, 64)])
def test_swap_parse(text, kind, size):
    spec = SwapSpec.parse(text)
    assert (spec.kind, spec.size_mib) == (kind, size)
    assert SwapSpec.parse(str(spec)) == spec


def test_swap_parse_rejects_garbage():
    with pytest.raises(ConfigError, match="file:MIB"):
        SwapSpec.parse("disk:12")


def test_swap_cmdline():
    assert SwapSpec.parse("zram:256").cmdline() == "bh.swap=zram:256"


@pytest.mark.parametrize("changes,needle", [({"name": "Bad_Name"}, "hostname"),
                                            ({"memory_mib": 64}, "memory"),
                                            ({"cpus": 0}, "cpus")])
def test_vmspec_validation(changes, needle):
    with pytest.raises(ConfigError, match=needle):
        VMSpec(**changes)


def test_timeouts_scale_with_accelerator(monkeypatch):
    monkeypatch.delenv("BALLOON_HARNESS_TIMEOUT_SCALE", raising=False)
    kvm, tcg = Timeouts().scaled(Accel.KVM), Timeouts().scaled(Accel.TCG)
    assert tcg.boot > kvm.boot * 3
    monkeypatch.setenv("BALLOON_HARNESS_TIMEOUT_SCALE", "2")
    assert Timeouts().scaled(Accel.TCG).boot == pytest.approx(tcg.boot * 2)


def test_explicit_timeouts_override_scaling():
    spec = VMSpec(timeouts=Timeouts(boot=7))
    assert spec.timeouts_for(Accel.TCG).boot == 7
