# Inner test files are run by tests/vm/test_plugin_lifecycle.py in a child pytest.
