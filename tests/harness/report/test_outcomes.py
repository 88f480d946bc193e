"""The outcome table is generated from the code: every outcome has a meaning and an exit code, and the
README's copy is the generated one."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from harness.oracle.verdict import Outcome, exit_code_of
from harness.report.outcomes import MEANING, outcome_markdown, outcome_rows

ROOT = Path(__file__).resolve().parents[3]


def test_every_outcome_has_a_meaning_and_its_exit_code():
    assert set(MEANING) == set(Outcome)
    rows = {o: c for o, _, c, _ in outcome_rows()}
    assert rows["rng_only"] == "3" and rows["stall"] == "4" and rows["bit_exact"] == "0"
    assert exit_code_of("fail", "rng_only") == 3 and exit_code_of("error", "stall") == 4
    assert exit_code_of("fail", "divergence") == 1 and exit_code_of("pass", "rng_accepted") == 0


def test_readme_outcome_table_is_the_generated_one():
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- outcomes:begin -->\n(.*?)\n<!-- outcomes:end -->", text, re.S)
    assert m, "README.md lost its generated outcome table markers"
    assert m.group(1) == outcome_markdown(), "regenerate: python -c 'from harness.report.outcomes import outcome_markdown; print(outcome_markdown())'"


def test_help_lists_outcomes_and_exit_codes():
    out = subprocess.run([str(Path(sys.executable).with_name("harness")), "run", "--help"], capture_output=True, text=True,
                         cwd=ROOT).stdout
    assert "outcomes and exit codes" in out and "rng_only" in out and "exit 3" in out and "--accept-rng" in out
