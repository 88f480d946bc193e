"""What the tests share besides fixtures (those are in tests/conftest.py): paths, trace builders
(traces.py), small checkpointed jobs (checkpoint_jobs.py), and the training scripts under scripts/."""

import os

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TESTS)
SUPPORT = os.path.join(TESTS, "support")
SCRIPTS = os.path.join(SUPPORT, "scripts")
EXAMPLES = os.path.join(REPO, "examples")
