"""Repro files without running anything: the TOML round trip, the schema checks (each bad input names the
file and the field), the script hash, the environment comparison, and the rerun comparison rules."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil

import pytest

from harness.cli import main
from harness.engine import TrialSpec
from harness.oracle import Divergence, RunResult, Verdict
from harness.repro import (DOES_NOT_REPRODUCE, EXIT_CODES, REPRODUCES, REPRODUCES_DIFFERENTLY, Environment,
                           Repro, ReproError, compare, resolve_script)
from harness.repro.schema import SCHEMA_VERSION

from support import SCRIPTS

BUGGY = os.path.join(SCRIPTS, "buggy_reseed.py")


def fake_result(target=BUGGY, verdict="fail", outcome="divergence", div=(5, 0, 1, ["rng:python", "loss"]),
                replay=None, where="trace"):
    d = Divergence(div[0], div[1], div[2], list(div[3]), where=where) if div else None
    v = Verdict(verdict, outcome, "a message", first_divergence=d, hint="check this" if verdict != "pass" else None)
    replay = replay if replay is not None else f"harness run {target} --nproc 2 --backend gloo --seed 3 --kill 7"
    return RunResult(v, target=target, nproc=2, backend="gloo", seed=3, plan="7", replay=replay)


@pytest.fixture
def script(tmp_path):
    """A copy of the buggy script (and the file it runs) in a folder of its own."""
    shutil.copy(os.path.join(SCRIPTS, "ddp_mlp.py"), tmp_path / "ddp_mlp.py")
    shutil.copy(BUGGY, tmp_path / "train.py")
    return str(tmp_path / "train.py")


@pytest.fixture
def saved(script, tmp_path):
    path = str(tmp_path / "bug.toml")
    Repro.from_result(fake_result(target=script)).dump(path)
    return path


def test_round_trip_keeps_every_field(script, tmp_path):
    result = fake_result(target=script, replay=f"harness run {script} --nproc 2 --backend gloo --seed 3 --kill 7 "
                                               f"--timeout 60 --stall 9 -- --steps 12 --save-every 3")
    repro = Repro.from_result(result, launcher="subprocess", baseline_runs=2)
    path = repro.dump(tmp_path / "bug.toml")
    back = Repro.load(path)
    assert back == repro
    assert back.script.args == ("--steps", "12", "--save-every", "3")
    assert (back.timeout_s, back.stall_s, back.launcher, back.baseline_runs) == (60.0, 9.0, "subprocess", 2)
    assert (back.nproc, back.backend, back.seed, back.plan, back.schema) == (2, "gloo", 3, "7", SCHEMA_VERSION)
    assert back.script.sha256 == hashlib.sha256(open(script, "rb").read()).hexdigest()
    assert back.script.path == os.path.relpath(script) or back.script.path == script
    d = back.expected.first_divergence
    assert (d.step, d.rank, d.attempt, d.fields, d.where) == (5, 0, 1, ("rng:python", "loss"), "trace")
    assert (back.expected.verdict, back.expected.outcome, back.expected.hint) == ("fail", "divergence", "check this")
    assert back.strategy is None and "strategy" not in open(path).read()  # omitted when the run had none
    assert back.environment == Environment.current()


def test_the_file_is_toml_with_a_header_and_the_documented_tables(saved):
    import tomllib

    text = open(saved).read()
    assert text.startswith("# resume-harness bug report (schema 1). Rerun it with: harness repro THIS_FILE")
    doc = tomllib.loads(text)
    assert set(doc) == {"schema", "created", "replay", "script", "run", "environment", "expected"}
    assert doc["environment"]["variables"]["PYTHONHASHSEED"] == os.environ.get("PYTHONHASHSEED", "0")
    assert doc["expected"]["first_divergence"]["fields"] == ["rng:python", "loss"]


def test_the_report_stores_the_results_spec_and_never_reads_its_replay(script, tmp_path):
    """The result's spec (RunResult.spec, as the engine ran it) is the report's [run]: every field of it."""
    spec = TrialSpec(script, nproc=2, backend="gloo", seed=3, plan="7", strategy="ddp", accept_rng=("numpy",),
                     accept_lost_progress=True, timeout_s=60.5, stall_s=9, script_args=("--steps", "12"))
    result = dataclasses.replace(fake_result(target=script, replay="(not read)"), spec=spec.to_json())
    repro = Repro.from_result(result)
    path = repro.dump(tmp_path / "s.toml")
    back = Repro.load(path)
    assert back == repro and back.spec == spec.replace(target=back.script.label)
    assert back.strategy == "ddp" and back.run_kwargs()["strategy"] == "ddp"
    assert back.run_kwargs()["accept_rng"] == ("numpy",) and back.run_kwargs()["accept_lost_progress"] is True
    assert 'accept_rng = [\n    "numpy",\n]' in open(path).read() or 'accept_rng = ["numpy"]' in open(path).read()


def test_a_result_without_a_spec_or_a_readable_replay_is_refused_naming_what_to_do(script):
    with pytest.raises(ReproError, match="the result has no spec and its replay command 'harness fuzz' cannot be "
                                         "read .*run it again with this harness"):
        Repro.from_result(fake_result(target=script, replay="harness fuzz"))


def test_a_bad_spec_field_in_the_file_names_it(saved):
    _edit(saved, "nproc = 2\n", "nproc = 2\nnnodes = 2\n")  # not torchrun: reset; torchrun needs an endpoint
    assert Repro.load(saved).spec.nnodes == 1
    _edit(saved, 'launcher = "pool"', 'launcher = "torchrun"')
    with pytest.raises(ReproError) as e:
        Repro.load(saved)
    assert str(e.value).startswith(saved + ": field run.rdzv_endpoint: several nodes need a rendezvous endpoint")


def test_auto_mode_is_kept_from_the_replay(script, tmp_path):
    result = fake_result(target=script, replay=f"harness run {script} --nproc 2 --backend gloo --seed 3 --auto --kill 7")
    back = Repro.load(Repro.from_result(result).dump(tmp_path / "a.toml"))
    assert back.auto is True and back.run_kwargs()["auto"] is True
    assert "auto" not in Repro.from_result(fake_result(target=script)).run_kwargs()


def test_an_elastic_trial_keeps_resume_nproc_and_the_exact_loss_rtol(script, tmp_path):
    replay = f"harness run {script} --nproc 2 --backend gloo --seed 3 --resume-nproc 3 --loss-rtol 0.000123457 --kill 7"
    r = fake_result(target=script, replay=replay)
    # the oracle's own tolerance is exact; the replay's is printed with 6 digits
    r = dataclasses.replace(r, verdict_=dataclasses.replace(
        r.verdict_, compared={"elastic": {"world_sizes": [2, 3], "loss_rtol": 1.23456789e-4}}))
    path = Repro.from_result(r).dump(tmp_path / "e.toml")
    back = Repro.load(path)
    assert (back.resume_nproc, back.loss_rtol) == (3, 1.23456789e-4)
    assert back.run_kwargs()["resume_nproc"] == 3 and back.run_kwargs()["loss_rtol"] == 1.23456789e-4
    # from the replay alone (a result without the oracle's record), and the explicit arguments win
    assert Repro.from_result(fake_result(target=script, replay=replay)).resume_nproc == 3
    assert Repro.from_result(r, resume_nproc=3, loss_rtol=0.5).loss_rtol == 0.5
    # the same world size is an ordinary trial, and an ordinary report has neither field
    assert Repro.from_result(r, resume_nproc=2).resume_nproc is None
    plain = Repro.from_result(fake_result(target=script))
    assert "resume_nproc" not in plain.run_kwargs() and "resume_nproc" not in plain.dumps()


def test_an_older_file_without_the_elastic_fields_still_reads(saved):
    text = open(saved).read()
    assert "resume_nproc" not in text and "loss_rtol" not in text
    back = Repro.load(saved)
    assert (back.resume_nproc, back.loss_rtol) == (None, None)


@pytest.mark.parametrize("add, message", [
    ("loss_rtol = 0.01\n", "field run.loss_rtol is only for an elastic trial (with run.resume_nproc)"),
    ("resume_nproc = 0\n", "field run.resume_nproc must be >= 1, got 0"),
    ("resume_nproc = 1\nloss_rtol = -1\n", "field run.loss_rtol must be >= 0, got -1"),
    ("resume_nproc = 1\nauto = true\n", "field run.resume_nproc cannot be combined with run.auto"),
])
def test_bad_elastic_fields_name_the_field(saved, add, message):
    _edit(saved, "nproc = 2\n", "nproc = 2\n" + add)
    with pytest.raises(ReproError) as e:
        Repro.load(saved)
    assert message in str(e.value) and str(e.value).startswith(saved + ": ")


def test_inline_keeps_the_exact_bytes_and_runs_from_the_output_folder(tmp_path):
    src = tmp_path / "odd.py"
    src.write_bytes("# é \\ \"\"\" '''\r\nprint('x')\t\n".encode())
    repro = Repro.from_result(fake_result(target=str(src)), inline=True)
    back = Repro.load(repro.dump(tmp_path / "inline.toml"))
    assert back.script.text.encode() == src.read_bytes() and back.script.name == "odd.py" and back.script.path is None
    written = resolve_script(back, repro_path=None, workdir=str(tmp_path / "out" / "script"))
    assert open(written, "rb").read() == src.read_bytes()


def test_a_final_state_divergence_has_no_step(script, tmp_path):
    result = fake_result(target=script, div=(None, 1, 1, ["params"]), where="final")
    back = Repro.load(Repro.from_result(result).dump(tmp_path / "f.toml"))
    d = back.expected.first_divergence
    assert (d.step, d.rank, d.where) == (None, 1, "final")


def _edit(path, old, new):
    text = open(path).read()
    assert old in text, old
    with open(path, "w") as f:
        f.write(text.replace(old, new, 1))


@pytest.mark.parametrize("old, new, message", [
    ("nproc = 2", "nproc = = 2", "not valid TOML: Invalid value (at line "),
    ("nproc = 2\n", "", "field run.nproc is missing"),
    ("nproc = 2", 'nproc = "two"', "field run.nproc must be an integer, got a string 'two'"),
    ("nproc = 2", "nproc = 0", "field run.nproc must be >= 1, got 0"),
    ("nproc = 2", "nproc = true", "field run.nproc must be an integer, got a boolean True"),
    ("schema = 1", "schema = 7", "field schema is 7, but this harness reads repro schema 1 only"),
    ("schema = 1", 'schema = "1"', "field schema must be an integer"),
    ("schema = 1\n", "", "field schema is missing"),
    ('plan = "7"', 'plan = "7@x"', "field run.plan is not a fault plan"),
    ('backend = "gloo"', 'backend = "mpi"', "field run.backend must be gloo or nccl, got 'mpi'"),
    ("nproc = 2", "nprocs = 2", "field run.nprocs is unknown in schema 1"),
    ('outcome = "divergence"', 'outcome = "oops"', "field expected.outcome must be an outcome"),
    ("step = 5\n", "", "field expected.first_divergence.step is missing"),
    ("[environment.variables]\n", "[environment.variables]\nX = 1\n",
     "field environment.variables.X must be a string, got an integer 1"),
    ('verdict = "fail"\n', "", "field expected.verdict is missing"),
    ('verdict = "fail"', "verdict = []", "field expected.verdict must be a string, got a list []"),
    ('[script]\n', '[script]\ntext = "x"\n', "[script] must have exactly one of path, text (inline) or scenario, "
                                               "not path and text"),
    ('sha256 = "', 'sha256 = "zz', "field script.sha256 must be 64 lowercase hex digits"),
    ('args = []', 'args = ["--steps", 3]', "field script.args must be a list of strings; item 1 is an integer 3"),
])
def test_bad_files_name_the_file_and_the_field(saved, old, new, message):
    _edit(saved, old, new)
    with pytest.raises(ReproError) as e:
        Repro.load(saved)
    assert message in str(e.value)
    assert str(e.value).startswith(saved + ": ")


def test_malformed_toml_gives_line_and_column(saved):
    _edit(saved, "nproc = 2", "nproc = = 2")
    line = next(i for i, ln in enumerate(open(saved).read().splitlines(), 1) if ln.startswith("nproc"))
    with pytest.raises(ReproError, match=rf"at line {line}, column 9"):
        Repro.load(saved)


def test_not_a_file_and_not_utf8(tmp_path):
    with pytest.raises(ReproError, match="cannot read the repro file .*nope.toml"):
        Repro.load(tmp_path / "nope.toml")
    (tmp_path / "bin.toml").write_bytes(b"schema = 1\n\xff\xfe")
    with pytest.raises(ReproError, match="not UTF-8 text"):
        Repro.load(tmp_path / "bin.toml")


def test_a_changed_script_is_refused_naming_both_hashes_and_the_path(saved, script, tmp_path):
    recorded = Repro.load(saved).script.sha256
    with open(script, "a") as f:
        f.write("# fixed\n")
    actual = hashlib.sha256(open(script, "rb").read()).hexdigest()
    repro = Repro.load(saved)
    with pytest.raises(ReproError) as e:
        resolve_script(repro, repro_path=saved, workdir=str(tmp_path / "w"))
    msg = str(e.value)
    assert recorded in msg and actual in msg and script in msg and "--ignore-hash" in msg
    assert "field script.sha256" in msg
    assert resolve_script(repro, repro_path=saved, workdir=str(tmp_path / "w"), ignore_hash=True) == script


def test_an_edited_inline_script_is_refused(tmp_path, script):
    path = Repro.from_result(fake_result(target=script), inline=True).dump(tmp_path / "i.toml")
    _edit(path, "reseed", "reseed2")
    with pytest.raises(ReproError, match="field script.sha256: the script changed"):
        resolve_script(Repro.load(path), repro_path=path, workdir=str(tmp_path / "w"))


def test_a_missing_script_names_the_places_looked_at(saved, script, tmp_path):
    os.unlink(script)
    with pytest.raises(ReproError) as e:
        resolve_script(Repro.load(saved), repro_path=saved, workdir=str(tmp_path / "w"))
    assert "field script.path: no such script" in str(e.value) and script in str(e.value)


def test_a_relative_path_is_also_looked_up_beside_the_repro_file(script, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = Repro.from_result(fake_result(target="train.py")).dump(tmp_path / "bug.toml")
    assert Repro.load(path).script.path == "train.py"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert resolve_script(Repro.load(path), repro_path=str(path), workdir="w") == script


def test_writing_a_repro_of_a_missing_target_or_an_inline_scenario_is_refused(tmp_path):
    with pytest.raises(ReproError, match="cannot write a repro of target"):
        Repro.from_result(fake_result(target=str(tmp_path / "gone.py")))
    with pytest.raises(ReproError, match="built-in scenario; it is recorded by name"):
        Repro.from_result(fake_result(target="buggy/rng_from_rank0"), inline=True)


def test_a_scenario_is_recorded_by_name_with_its_module_hash(tmp_path):
    from harness.repro.schema import scenario_file, sha256_file

    back = Repro.load(Repro.from_result(fake_result(target="buggy/rng_from_rank0")).dump(tmp_path / "s.toml"))
    assert back.script.scenario == "buggy/rng_from_rank0" and back.script.path is None
    assert back.script.sha256 == sha256_file(scenario_file("harness.scenarios.buggy.rng_from_rank0"))
    assert resolve_script(back, repro_path=None, workdir=str(tmp_path)) == "buggy/rng_from_rank0"


def test_environment_differences_name_each_field():
    here = Environment.current()
    there = dataclasses.replace(here, torch="1.0.0", variables={**here.variables, "OMP_NUM_THREADS": "8",
                                                                 "HARNESS_X": "1"})
    assert there.differences(here) == [
        f"environment.torch: recorded '1.0.0', here {here.torch!r}",
        "environment.variables.HARNESS_X: recorded '1', here (unset)",
        f"environment.variables.OMP_NUM_THREADS: recorded '8', here {here.variables['OMP_NUM_THREADS']!r}",
    ]
    assert here.differences(here) == []


def test_compare_rules(script):
    expected = Repro.from_result(fake_result(target=script)).expected
    assert compare(expected, fake_result())[0] == REPRODUCES
    assert compare(expected, fake_result(div=(5, 0, 2, ["rng:python", "loss"])))[0] == REPRODUCES  # attempt aside
    status, msg = compare(expected, fake_result(div=(6, 0, 1, ["rng:python", "loss"])))
    assert status == REPRODUCES_DIFFERENTLY and "now divergence at step 6" in msg and "had divergence at step 5" in msg
    assert compare(expected, fake_result(div=(5, 1, 1, ["rng:python", "loss"])))[0] == REPRODUCES_DIFFERENTLY
    assert compare(expected, fake_result(div=(5, 0, 1, ["loss"])))[0] == REPRODUCES_DIFFERENTLY
    assert compare(expected, fake_result(outcome="crash_on_resume", div=None))[0] == REPRODUCES_DIFFERENTLY
    passed = fake_result(verdict="pass", outcome="bit_exact", div=None)
    assert compare(expected, passed)[0] == DOES_NOT_REPRODUCE
    passing = dataclasses.replace(expected, verdict="pass", outcome="bit_exact", first_divergence=None)
    assert compare(passing, passed)[0] == REPRODUCES
    assert compare(passing, fake_result())[0] == REPRODUCES_DIFFERENTLY
    assert EXIT_CODES == {"reproduces": 0, "reproduces_differently": 1, "does_not_reproduce": 1,
                          "environment_differs": 2}


# ------------------------------------------------------------------------------------------- CLI, no launch


@pytest.mark.parametrize("edit, message", [
    (("nproc = 2", 'nproc = "two"'), "field run.nproc must be an integer"),
    (("schema = 1", "schema = 2"), "field schema is 2"),
    (("nproc = 2", "nproc = = 2"), "not valid TOML"),
])
def test_cli_repro_of_a_bad_file_exits_2_with_one_line(saved, capsys, edit, message):
    _edit(saved, *edit)
    assert main(["repro", saved]) == 2
    err = capsys.readouterr().err
    assert message in err and saved in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_repro_of_a_changed_script_exits_2_before_running(saved, script, capsys):
    with open(script, "a") as f:
        f.write("# changed\n")
    assert main(["repro", saved, "--json"]) == 2
    import json

    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "error" and out["exit_code"] == 2 and "script changed" in out["message"]


def test_cli_usage_errors(capsys, tmp_path):
    assert main(["repro"]) == 2
    assert main(["repro", str(tmp_path / "none.toml")]) == 2
    assert "cannot read the repro file" in capsys.readouterr().err
    assert main(["run", BUGGY, "--inline"]) == 2
    assert "--inline needs --save-repro FILE" in capsys.readouterr().err
    assert main(["run", "buggy/rng_from_rank0", "--save-repro", str(tmp_path / "x.toml"), "--inline"]) == 2
    assert "built-in scenario" in capsys.readouterr().err
    assert not (tmp_path / "x.toml").exists()


def test_the_docs_give_every_status_with_its_exit_code_and_the_schema():
    """docs/cli/repro.md (the command) and docs/repro-format.md (the file: its schema is generated from
    harness/repro/schema.py when the site is built, by docs/hooks.py, loaded here by path)."""
    import importlib.util

    from harness.repro import STATUSES
    from support import REPO

    spec = importlib.util.spec_from_file_location("docs_hooks", os.path.join(REPO, "docs", "hooks.py"))
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    section = hooks.render("cli/repro.md") + hooks.render("repro-format.md")
    for status in STATUSES:
        assert f"| `{status}` | {EXIT_CODES[status]} |" in section, status
    for field in ("schema = 1", "[script]", "sha256", "[run]", "[environment]", "[environment.variables]",
                  "[expected]", "[expected.first_divergence]", "--ignore-hash", "--save-repro", "--inline"):
        assert field in section, field


def test_a_rerun_runs_the_files_spec(saved, script, tmp_path, monkeypatch):
    """harness repro runs the spec the file stores ([run] + [script]), on the script as found here."""
    import harness.engine
    from harness.repro import rerun

    _edit(saved, "nproc = 2\n", 'nproc = 2\naccept_rng = ["numpy"]\nstrategy = "ddp"\n')
    repro = Repro.load(saved)
    ran = []

    def fake_run(spec, *, out_dir, use_cache, launcher, progress):
        ran.append(spec)
        return fake_result(target=spec.target)

    monkeypatch.setattr(harness.engine, "run", fake_run)
    outcome = rerun(repro, repro_path=saved, out_dir=str(tmp_path / "rerun"))
    assert outcome.status in (REPRODUCES, "environment_differs")
    assert ran == [repro.spec.replace(target=script)]
    assert (ran[0].accept_rng, ran[0].strategy, ran[0].plan, ran[0].seed) == (("numpy",), "ddp", "7", 3)
