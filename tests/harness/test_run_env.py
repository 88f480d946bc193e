"""harness.run_env: the HARNESS_* names are defined once and the typed RankEnv round-trips through an environment."""

from __future__ import annotations

import pathlib
import re

import pytest

from harness import run_env
from harness.run_env import RankEnv

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_rank_env_round_trips_through_the_environment():
    env = RankEnv(trace_dir="/t", run_dir="/r", attempt=2, fault_json='{"at": {"step": 3}}', backend="gloo",
                  role="trial", strategy="fsdp", auto=True, baseline_index="/i.json")
    assert RankEnv.read(env.to_env()) == env
    assert RankEnv.read({}) == RankEnv() and not RankEnv.read({}).under_harness


def test_unset_options_are_left_out_of_the_environment():
    out = RankEnv(trace_dir="/t", baseline_index="/i.json").to_env()
    assert run_env.STRATEGY not in out and run_env.AUTO not in out
    assert run_env.BASELINE_INDEX not in out  # only auto mode reads the index


def test_a_bad_attempt_number_names_the_variable():
    with pytest.raises(ValueError, match="HARNESS_ATTEMPT"):
        RankEnv.read({run_env.ATTEMPT: "two"})


def test_every_name_is_a_harness_variable_listed_once():
    assert len(set(run_env.NAMES)) == len(run_env.NAMES)
    assert all(n.startswith("HARNESS_") for n in run_env.NAMES)
    assert run_env.PER_LAUNCH <= set(run_env.NAMES)


def test_harness_code_spells_no_harness_variable_as_a_literal():
    """Each name has one home: code elsewhere refers to run_env's constants (docstrings may name them)."""
    literal = re.compile(r'(?<![\w`$])"(HARNESS_[A-Z_]+)"')
    found = []
    for path in sorted((ROOT / "harness").rglob("*.py")):
        if path.name == "run_env.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if literal.search(line) and not line.lstrip().startswith("#"):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)
