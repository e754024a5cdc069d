"""`make slowest`: a test's time split into its VM starts and its body, from the JUnit report."""

import json

from harness.slowest import main, read_junit, render


def junit(tmp_path, cases):
    body = ""
    for name, seconds, starts in cases:
        props = f'<properties><property name="vm_starts" value="{json.dumps(starts).replace(chr(34), "&quot;")}"/></properties>'
        body += f'<testcase classname="tests.vm.t" name="{name}" time="{seconds}">{props}</testcase>'
    path = tmp_path / "junit.xml"
    path.write_text(f'<testsuites><testsuite name="pytest">{body}</testsuite></testsuites>')
    return path


def test_slowest_first_with_what_they_waited_for(tmp_path, capsys):
    path = junit(tmp_path, [
        ("test_quick", 1.0, []),
        ("test_boots", 30.0, [{"name": "vm", "kind": "template", "backend": "qemu", "seconds": 12.0},
                              {"name": "vm", "kind": "restore-shared", "backend": "qemu", "seconds": 0.5},
                              {"name": "lv", "kind": "cold-boot", "backend": "libvirt", "seconds": 9.5}]),
    ])
    tests = read_junit(path)
    text = render(tests, top=1)
    assert "test_boots" in text and "test_quick" not in text
    assert "1x template 12.0s" in text and "1x cold-boot/libvirt 9.5s" in text and "test body 8.0s" in text
    assert main([str(path), "--top", "2"]) == 0
    assert "test_quick" in capsys.readouterr().out  # --top 2 lists both


def test_missing_report_names_the_fix(tmp_path, capsys):
    assert main([str(tmp_path / "none.xml")]) == 2
    assert "--junitxml" in capsys.readouterr().err
