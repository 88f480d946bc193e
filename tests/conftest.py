"""The one home of the test fixtures shared across test modules.

- ``shared_cache``: one baseline cache folder for the whole session, shared by every pytest-xdist
  worker (they race on it on purpose: the engine locks per key); set as HARNESS_CACHE_DIR for every
  test, so no test writes into ~/.cache.
- ``pool``: the one warm fork-server launcher of this pytest process (the plugin's
  ``resume_harness_launcher``), closed at the end of the session.

Paths, trace builders and small checkpointed jobs are in ``tests/support``.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> str:
    """One baseline cache for all pytest-xdist workers of this session."""
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


@pytest.fixture(scope="session")
def pool(resume_harness_launcher):
    """The warm fork-server launcher shared by every test of this pytest process."""
    return resume_harness_launcher
