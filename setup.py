"""Package discovery: every folder under apps/ is found by setuptools, so a new app needs no line
here or in pyproject.toml. Everything else about the package lives in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=["dlapps.shared", "dlapps.apps"] + [f"dlapps.apps.{name}" for name in find_packages("apps")],
)
