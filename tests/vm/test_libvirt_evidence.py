"""The libvirt backend seen from a whole session (a child pytest, its backend and artifacts
folder chosen by BALLOON_HARNESS_* alone): its guests boot (saved states are the direct
backend's), and a failed test's artifacts hold the domain XML beside the usual evidence."""

import json
import xml.etree.ElementTree as ET

import pytest
from child import INNER, child_pytest

from harness.machine.libvirt import connect

pytestmark = pytest.mark.xdist_group("child-pytest")


def test_libvirt_guest_boots_and_a_failed_test_keeps_its_domain_xml(tmp_path):
    artifacts, report = tmp_path / "evidence", tmp_path / "report.json"
    proc = child_pytest([str(INNER / "inner_fail_booted.py")], tmp_path,
                        {"BALLOON_HARNESS_BACKEND": "libvirt", "BALLOON_HARNESS_ARTIFACTS": str(artifacts),
                         "BH_REPORT": str(report)})
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 1 and "deliberate failure" in out, out
    seen = json.loads(report.read_text())

    # Booted, not restored: a cold boot was all it waited for, and its kernel started after
    # its QEMU did (a restored guest's uptime would include the template's boot).
    assert seen["backend"] == "libvirt" and not seen["restored"]
    assert seen["starts"] == ["cold-boot"]
    assert seen["uptime"] <= seen["since_launch"] * 1.01, seen

    (test_dir,) = artifacts.iterdir()
    (vm_dir,) = test_dir.iterdir()
    domain = ET.parse(vm_dir / "domain.xml").getroot()
    assert domain.get("type") in ("qemu", "kvm")
    assert domain.findtext("name") == seen["domain"]
    assert domain.find("devices/memballoon") is not None
    assert {"serial.log", "cmdline.txt", "dmesg.txt", "journal.txt"} <= {p.name for p in vm_dir.iterdir()}
    assert "evidence-from-the-guest" in (vm_dir / "dmesg.txt").read_text()
    assert "qemu-system-x86_64" in (vm_dir / "cmdline.txt").read_text()
    # The domain died with its test.
    assert seen["domain"] not in {d.name() for d in connect(None).listAllDomains()}
