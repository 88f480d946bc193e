"""harness certify on a user's own script: a documented target (``harness certify path/to/train.py`` or
``--scenarios path``), labelled by its file name, certified in auto mode when it has no probe calls, with
its own save calls as fault points."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from harness.certify import CertifyError
from harness.certify.matrix import AUTO_FAULT_CLASSES, FAULT_CLASSES, CampaignSpec, Cell
from harness.certify.schedule import NotApplicable, Profile, classes_covered, plans_for
from harness.cli import main

from support import SCRIPTS

HARNESS = os.path.join(os.path.dirname(sys.executable), "harness")
TWO_PHASE = os.path.join(SCRIPTS, "newcomer_two_phase.py")
RACE = os.path.join(SCRIPTS, "newcomer_rank_race.py")


def user_script(tmp_path, source: str, rel: str) -> str:
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, path)
    return str(path)


def test_a_script_is_labelled_by_its_file_name_and_gets_the_auto_mode_classes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    user_script(tmp_path, TWO_PHASE, ".tmp/newcomer/mytrain/train.py")
    sp = CampaignSpec.make(scenarios=[".tmp/newcomer/mytrain/train.py"], world_sizes="2", trials=1,
                           script_args=("--steps", "20"))
    (s,) = sp.scenarios
    assert (s.label, s.target, s.args, s.auto) == ("train.py", ".tmp/newcomer/mytrain/train.py", ("--steps", "20"), False)
    assert s.auto_mode()  # no harness import: auto mode, as harness run decides it
    assert sp.classes == tuple(AUTO_FAULT_CLASSES)
    assert [c.id for c in sp.cells()][:2] == ["train.py|step_kill|2", "train.py|one_rank|2"]
    assert CampaignSpec.from_json(json.loads(json.dumps(sp.to_json()))) == sp
    # with a built-in scenario beside it, both kinds of classes, in one order
    both = CampaignSpec.make(scenarios=["default", ".tmp/newcomer/mytrain/train.py"], world_sizes="2")
    assert set(both.classes) == set(FAULT_CLASSES) | set(AUTO_FAULT_CLASSES)
    assert both.classes.index("save_call") < both.classes.index("save:checkpoint.begin")
    # the reference campaign is what it was
    assert CampaignSpec.make(world_sizes="2").classes == tuple(FAULT_CLASSES)


def test_two_scripts_of_one_name_are_told_apart_and_auto_is_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    user_script(tmp_path, TWO_PHASE, "a/train.py")
    user_script(tmp_path, RACE, "b/train.py")
    sp = CampaignSpec.make(scenarios=["a/train.py", "b/train.py"], world_sizes="2", auto=True)
    assert [s.label for s in sp.scenarios] == ["a/train.py", "b/train.py"] and all(s.auto for s in sp.scenarios)
    assert CampaignSpec.from_json(json.loads(json.dumps(sp.to_json()))).scenarios == sp.scenarios
    assert sp.to_json()["scenarios"][0]["auto"] is True


def test_script_options_without_a_script_are_refused(capsys, tmp_path):
    with pytest.raises(CertifyError, match="--auto apply to scripts"):
        CampaignSpec.make(world_sizes="2", auto=True)
    assert main(["certify", "--out", str(tmp_path / "o"), "--", "--steps", "3"]) == 2
    assert "script arguments (after --) apply to scripts" in capsys.readouterr().err
    assert main(["certify", str(tmp_path / "missing.py"), "--out", str(tmp_path / "o")]) == 2
    assert "no such script" in capsys.readouterr().err and not (tmp_path / "o").exists()


def auto_profile(ws: int = 2) -> Profile:
    """A plain script in auto mode: 30 steps, each rank saves one file at 5, 10, ..., 30 (torch.save, then
    checkpoint.committed); the first complete checkpoint is 5."""
    saves = (5, 10, 15, 20, 25, 30)
    points = {name: {r: list(saves) for r in range(ws)} for name in ("torch.save", "checkpoint.committed")}
    return Profile(ws, 30, saves, points, auto=True)


def test_the_schedule_of_a_script_in_auto_mode():
    profile = auto_profile()
    plans = {cls: plans_for(Cell("train.py", cls, 2), profile, seed=0, trials=6) for cls in AUTO_FAULT_CLASSES}
    assert classes_covered(plans) == set(AUTO_FAULT_CLASSES)
    for plan in plans["save_call"]:  # a save call after the first complete checkpoint: torch.save:2 and later
        (f,) = plan
        assert f.point == "torch.save" and f.occurrence >= 2, plan.format()
    # auto mode records checkpoint.loaded as an event, not a fault point: later faults are steps
    for plan in plans["multi_fault"]:
        assert len(plan) >= 2 and all(f.step is not None for f in plan), plan.format()
    with pytest.raises(NotApplicable, match="no save call auto mode sees"):
        plans_for(Cell("train.py", "save_call", 2), Profile(2, 30, (5,), {}, auto=True), seed=0, trials=2)


def certify(tmp_path, shared_cache, *args: str) -> tuple[int, dict, str]:
    env = {**os.environ, "HARNESS_CACHE_DIR": shared_cache, "COLUMNS": "200"}
    proc = subprocess.run([HARNESS, "certify", *args, "--world-sizes", "2", "--out", "cert"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    cert_file = tmp_path / "cert" / "certificate.json"
    cert = json.load(open(cert_file)) if cert_file.exists() else {}
    return proc.returncode, cert, proc.stdout + proc.stderr


def test_an_unmodified_script_is_certified_in_auto_mode(tmp_path, shared_cache):
    shutil.copyfile(TWO_PHASE, tmp_path / "train_two_phase.py")
    code, cert, out = certify(tmp_path, shared_cache, "train_two_phase.py", "--trials", "1",
                              "--classes", "save_call,save:checkpoint.committed")
    assert "train_two_phase.py: no probe calls: testing in auto mode" in out, out[-3000:]
    assert code == 0 and cert["summary"]["verdict"] == "pass", out[-3000:]
    assert [c["id"] for c in cert["cells"]] == ["train_two_phase.py|save_call|2",
                                                "train_two_phase.py|save:checkpoint.committed|2"]
    plans = {t["cell"].split("|")[1]: t["plan"] for t in cert["trials"]}
    assert plans["save_call"].startswith("torch.save:") and plans["save:checkpoint.committed"].startswith(
        "checkpoint.committed:")
    assert all(" --auto " in t["replay"] and t["outcome"] == "bit_exact" for t in cert["trials"])
    assert not (tmp_path / "ckpt").exists()  # its relative checkpoint folder went under each trial's run folder


@pytest.mark.slow  # ~15 s, but a race: a kill before one rank's save, while the other rank saves
def test_the_rank_race_fails_its_save_cells(tmp_path, shared_cache):
    shutil.copyfile(RACE, tmp_path / "train_rank_race.py")
    code, cert, out = certify(tmp_path, shared_cache, "--scenarios", "train_rank_race.py", "--trials", "2",
                              "--classes", "save_call")
    assert code == 1 and cert["summary"]["verdict"] == "fail", out[-3000:]
    failed = [t for t in cert["trials"] if t["verdict"] == "fail"]
    # the other rank's save of that step finished before the kill: the ranks resume from different steps
    assert failed and {t["outcome"] for t in failed} == {"ranks_resumed_apart"}, failed
    assert {t["cell"] for t in failed} == {"train_rank_race.py|save_call|2"}
