"""The README's example script passes a kill/resume trial, and the README's commands are the ones CI runs."""

from __future__ import annotations

import os
import re

import pytest

from support import REPO as ROOT  # noqa: E402


@pytest.mark.parametrize("plan", ["7", "9@all"])
def test_readme_example_resumes_bit_exact(resume_harness, plan):
    result = resume_harness(os.path.join(ROOT, "examples", "train_ddp.py"), plan=plan)
    assert result.verdict == "pass" and result.outcome == "bit_exact", result.message
    assert any(a.loaded for a in result.attempts)


@pytest.mark.parametrize("page", ["README.md", os.path.join("docs", "getting-started.md")])
def test_readme_example_matches_the_file(page):
    """The script shown in the README and in the docs' Getting started is examples/train_ddp.py, line for line
    (docstring aside)."""
    text = open(os.path.join(ROOT, page)).read()
    code = open(os.path.join(ROOT, "examples", "train_ddp.py")).read()
    body = code[code.index('"""', 3) + 3:].strip()
    assert f"```python\n{body}\n```" in text


def test_ci_runs_the_readme_test_command():
    readme = open(os.path.join(ROOT, "README.md")).read()
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    command = re.search(r"The tests .*?```bash\n(.*?)\n```", readme, re.S).group(1).strip()
    assert command in ci.splitlines()
