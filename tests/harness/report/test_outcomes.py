"""The outcome table is generated from the code: every outcome has a meaning and an exit code, and the
documentation's copy (docs/outcomes.md; the README's before the docs site) is the generated one."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from harness.oracle import Outcome, VerdictKind, exit_code_of
from harness.report.outcomes import MEANING, outcome_markdown, outcome_rows

ROOT = Path(__file__).resolve().parents[3]


def test_every_outcome_has_a_meaning_and_its_exit_code():
    assert set(MEANING) == set(Outcome)
    rows = {o: c for o, _, c, _ in outcome_rows()}
    assert rows["rng_only"] == "3" and rows["stall"] == "4" and rows["bit_exact"] == "0"
    assert exit_code_of("fail", "rng_only") == 3 and exit_code_of("error", "stall") == 4
    assert exit_code_of("fail", "divergence") == 1 and exit_code_of("pass", "rng_accepted") == 0


def test_verdicts_and_outcomes_are_string_enums_that_keep_their_json_and_exit_codes():
    import json

    assert VerdictKind.FAIL == "fail" and "fail" == VerdictKind.FAIL and str(VerdictKind.ERROR) == "error"
    assert f"{Outcome.RNG_ONLY}" == "rng_only" and json.dumps([VerdictKind.PASS, Outcome.STALL]) == '["pass", "stall"]'
    assert exit_code_of(VerdictKind.FAIL, Outcome.RNG_ONLY) == 3 and exit_code_of(VerdictKind.ERROR, Outcome.STALL) == 4
    assert exit_code_of(VerdictKind.FAIL, Outcome.DIVERGENCE) == 1 and exit_code_of(VerdictKind.ERROR, "no_such") == 2


def test_documented_outcome_table_is_the_generated_one():
    doc = ROOT / "docs" / "outcomes.md"  # the site regenerates it at build time (docs/hooks.py); this copy is for GitHub
    m = re.search(r"<!-- outcomes:begin -->\n(.*?)\n<!-- outcomes:end -->", doc.read_text(), re.S)
    assert m, f"{doc.name} lost its generated outcome table markers"
    assert m.group(1) == outcome_markdown(), "regenerate: python docs/hooks.py --write"


def test_help_lists_outcomes_and_exit_codes():
    out = subprocess.run([str(Path(sys.executable).with_name("harness")), "run", "--help"], capture_output=True, text=True,
                         cwd=ROOT).stdout
    assert "outcomes and exit codes" in out and "rng_only" in out and "exit 3" in out and "--accept-rng" in out
