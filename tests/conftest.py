"""Test set-up: several CPU devices for the sharding tests, before JAX is imported; the
miniature datasets shared by the data tests (read-only, built once per session)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import data_fixtures  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def pascal(tmp_path_factory):
    """A miniature VOC2012 tree and its prepared pascal5i dataset."""
    return data_fixtures.prepare_pascal_tree(tmp_path_factory)


@pytest.fixture(scope="session")
def pascal_dir(pascal):
    """The prepared pascal5i dataset directory."""
    return pascal[3]


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    """A small prepared synthetic dataset directory."""
    return data_fixtures.prepare_small_synthetic(tmp_path_factory)
