"""Each test's evidence gets a folder of its own: two test ids that differ only after the
readable part (long parametrized ids), or only in characters a folder name cannot keep,
never share one (one test's evidence would overwrite the other's)."""

from harness.pytest_plugin import _artifact_dir

LONG = "tests/vm/test_scenarios.py::test_scenario_on_both_backends[" + "short-overcommit-" * 12


def test_long_ids_that_differ_only_at_the_end_get_distinct_folders(request):
    a = _artifact_dir(request.config, LONG + "qemu]")
    b = _artifact_dir(request.config, LONG + "libvirt]")
    assert a != b, "two tests share an artifact folder"
    assert a.parent == b.parent
    assert a.name.startswith("tests_vm_test_scenarios.py_test_scenario_on_both_backends_short-overcommit")
    assert len(a.name) < 200  # a file name may have 255 bytes


def test_ids_that_differ_only_in_unsafe_characters_get_distinct_folders(request):
    a = _artifact_dir(request.config, "tests/vm/test_x.py::test_size[a/b]")
    b = _artifact_dir(request.config, "tests/vm/test_x.py::test_size[a_b]")
    assert a != b
    assert a.name.startswith("tests_vm_test_x.py_test_size_a_b")


def test_the_folder_of_a_test_is_stable(request):
    assert _artifact_dir(request.config, LONG) == _artifact_dir(request.config, LONG)
