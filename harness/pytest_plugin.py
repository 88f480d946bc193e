"""pytest plugin of resume-harness (loaded in every pytest session through the pytest11 entry point).

    def test_my_training_resumes(resume_harness):
        result = resume_harness("train.py", nproc=2, plan="12")   # -> harness.oracle.RunResult
        assert result.verdict == "pass", result.message

``resume_harness(target, **kwargs)`` calls ``harness.engine.run`` with the test's ``tmp_path`` as
output folder and one warm fork-server launcher per pytest process (so per xdist worker), closed at
the end of the session. Importing this module imports nothing beyond pytest.
"""

from __future__ import annotations

import itertools

import pytest


@pytest.fixture(scope="session")
def resume_harness_launcher():
    """The fork-server launcher shared by every trial of this pytest process."""
    from harness.launch.forkserver import ForkServerLauncher

    launcher = ForkServerLauncher()
    try:
        yield launcher
    finally:
        launcher.close()


@pytest.fixture
def resume_harness(resume_harness_launcher, tmp_path):
    """A callable ``run(target, **kwargs) -> RunResult`` (see ``harness.engine.run``)."""
    from harness.engine import run

    counter = itertools.count()

    def run_trial(target, **kwargs):
        kwargs.setdefault("out_dir", str(tmp_path / f"trial{next(counter)}"))
        kwargs.setdefault("launcher", resume_harness_launcher)
        return run(target, **kwargs)

    return run_trial
