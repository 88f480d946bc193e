"""Test-session settings shared by every test module."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _baseline_cache_outside_home(tmp_path_factory):
    """Baselines cached by tests go to this session's temp folder (shared by the xdist workers of one
    run, which the cache's lock allows), never into ~/.cache. Tests that need their own set it."""
    if "HARNESS_CACHE_DIR" in os.environ:
        yield
        return
    root = tmp_path_factory.getbasetemp()
    shared = root.parent if root.name.startswith("popen-gw") else root
    os.environ["HARNESS_CACHE_DIR"] = str(shared / "harness-cache")
    try:
        yield
    finally:
        os.environ.pop("HARNESS_CACHE_DIR", None)
