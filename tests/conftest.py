import os

# Before TensorFlow loads anywhere in the test session: quiet C++ logs, deterministic hashing.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PYTHONHASHSEED", "0")

import inspect

import pytest

# Fixtures that train a model (once per test run, shared): a test that needs one is `slow` by the
# marker's own definition, so `-m "not slow"` is the quick inner loop of everything else.
TRAINED_FIXTURES = {"run_dir", "tiny_run", "trained", "trained_run", "table_run", "yolo_run", "models", "server", "demo_vae"}

# The longest test files first (measured: detect and translate are the two longest by far):
# `--dist loadfile` hands whole files to the workers in collection order, so these start at once on
# their own workers and the short files fill in behind them, instead of a long file starting last.
LONGEST_FIRST = ("test_detect.py", "test_translate.py", "test_asr.py", "test_generate.py", "test_anomaly.py",
                 "test_sentiment.py", "test_serve.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a file stays
    for item in items:
        if item.get_closest_marker("slow"):
            continue
        function = getattr(item, "function", None)
        source = inspect.getsource(function) if function is not None else ""
        trains_inline = '"train"' in source and "assert_user_error" not in source  # a CLI train that succeeds
        if TRAINED_FIXTURES.intersection(getattr(item, "fixturenames", ())) or trains_inline:
            item.add_marker(pytest.mark.slow)
