"""Test-session settings shared by every test module."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> str:
    """One baseline cache for all pytest-xdist workers of this session (they race on it on purpose)."""
    base = tmp_path_factory.getbasetemp()
    return str((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "harness-baseline-cache")


@pytest.fixture(scope="session", autouse=True)
def _baseline_cache_outside_home(shared_cache):
    """Baselines cached by tests go to the session's shared cache, never into ~/.cache."""
    if "HARNESS_CACHE_DIR" in os.environ:
        yield
        return
    os.environ["HARNESS_CACHE_DIR"] = shared_cache
    try:
        yield
    finally:
        os.environ.pop("HARNESS_CACHE_DIR", None)
