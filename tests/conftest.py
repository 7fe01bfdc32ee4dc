import os

# Before TensorFlow loads anywhere in the test session: quiet C++ logs, deterministic hashing.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PYTHONHASHSEED", "0")
