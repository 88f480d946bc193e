"""harness inspect / harness diff on plain torch.save and safetensors files, and on a script's own folder of
per-rank files with a `latest` pointer (the two-phase commit of a hand-written training script), run as users
run them: the `harness` console script in a subprocess."""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from harness.contents import diff_contents, read_checkpoint
from harness.contents.readers import ContentsError

HARNESS = os.path.join(os.path.dirname(sys.executable), "harness")


def _harness(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([HARNESS, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _state(step: int, rank: int = 0) -> dict:
    """What a hand-written DDP script saves per rank (as /work/shared/cases/newcomer/train_two_phase.py does):
    model, AdamW, cosine scheduler, step, and the python / numpy / torch RNG states."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=30)
    for _ in range(step):
        model(torch.randn(2, 4)).sum().backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    random.seed(rank), np.random.seed(rank)
    return dict(model=model.state_dict(), optimizer=opt.state_dict(), scheduler=sched.state_dict(), step=step,
                rng_python=random.getstate(), rng_numpy=np.random.get_state(), rng_torch=torch.get_rng_state())


def _two_phase(folder, steps=(5, 10), world=2, nested=False) -> None:
    """Per-step files per rank, then `latest` pointing at the step (written last, as the commit)."""
    os.makedirs(folder, exist_ok=True)
    for step in steps:
        for rank in range(world):
            path = os.path.join(folder, f"step{step}", f"rank{rank}.pt") if nested else \
                os.path.join(folder, f"step{step}_rank{rank}.pt")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            torch.save(_state(step, rank), path + ".tmp")
            os.replace(path + ".tmp", path)
        with open(os.path.join(folder, "latest"), "w") as f:
            f.write(str(step))


def _flip_lowest_bit(path, key="model") -> None:
    state = torch.load(path, weights_only=False)
    state[key]["0.weight"].view(-1).view(torch.int32)[3] ^= 1
    torch.save(state, path)


def test_one_torch_save_file(tmp_path):
    a, b = tmp_path / "step10_rank0.pt", tmp_path / "other.pt"
    torch.save(_state(10), a)
    shutil.copy(a, b)
    shown = _harness("inspect", a.name, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "step10_rank0.pt: torch.save file" in shown.stdout and "is a file" not in shown.stderr
    assert "  step: 10" in shown.stdout and "rank: 0 (from the file name)" in shown.stdout
    assert "model/0.weight" in shown.stdout and "rng_numpy/#1" in shown.stdout and "uint32" in shown.stdout
    assert "rng_python=[3 items]" in shown.stdout

    assert diff_contents(read_checkpoint(str(a)), read_checkpoint(str(b))).identical  # names differ, contents equal
    _flip_lowest_bit(b)
    diff = _harness("diff", a.name, b.name, "--json", cwd=tmp_path)
    assert diff.returncode == 1, diff.stderr
    doc = json.loads(diff.stdout)
    assert (doc["first"]["name"], doc["first"]["n_diff"], doc["first"]["max_ulp"]) == ("model/0.weight", 1, 1)
    assert [t["name"] for t in doc["tensors"]] == ["model/0.weight"] and not doc["state"]


@pytest.mark.slow  # a fresh interpreter per command; the fast suite keeps one of them
def test_folder_of_per_rank_files_with_latest_is_read_as_files_not_deepspeed(tmp_path):
    _two_phase(tmp_path / "flat")
    torch.save(_state(15), tmp_path / "flat" / "step15_rank0.pt.tmp")  # a kill in the middle of the next save
    _two_phase(tmp_path / "nested", nested=True)

    shown = _harness("inspect", "flat", cwd=tmp_path)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    out = shown.stdout
    assert out.startswith("flat: folder of torch.save / safetensors files") and "DeepSpeed" not in out
    assert "  ranks: 0, 1" in out and "  latest: 10" in out
    assert "step15_rank0.pt.tmp" in out and "not read: a temporary file" in out
    assert "\nrank0: " in out and "\nrank1: " in out
    assert "step10/model/0.weight" in out and "step5/optimizer/state/#0/exp_avg" in out

    # the same checkpoints in the other common layout (step10/rank1.pt) carry the same names: identical
    flat = read_checkpoint(str(tmp_path / "flat"))
    same = diff_contents(flat, read_checkpoint(str(tmp_path / "nested")))
    assert same.identical and same.compared == len(flat.tensors) == 2 * 2 * 18  # 2 steps x 2 ranks

    _flip_lowest_bit(tmp_path / "nested" / "step10" / "rank1.pt")
    with open(tmp_path / "nested" / "latest", "w") as f:
        f.write("5")
    diff = _harness("diff", "flat", "nested", cwd=tmp_path)
    assert diff.returncode == 1
    assert "first differing tensor: rank1: step10/model/0.weight" in diff.stdout
    assert "shared: latest: A '10'  B '5'" in diff.stdout


@pytest.mark.slow  # a fresh interpreter per command; the fast suite keeps one of them
def test_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    weights = {k: v.contiguous() for k, v in _state(3)["model"].items()}
    save_file(weights, str(tmp_path / "a.safetensors"))
    weights["2.bias"].view(torch.int32)[0] ^= 1 << 4  # 16 ULP
    save_file(weights, str(tmp_path / "b.safetensors"))
    shown = _harness("inspect", "a.safetensors", "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["format"] == "safetensors" and doc["ok"]
    assert {t["name"]: t["shape"] for t in doc["groups"]["shared"]["tensors"]} == {
        "0.bias": [8], "0.weight": [8, 4], "2.bias": [1], "2.weight": [1, 8]}
    diff = _harness("diff", "a.safetensors", "b.safetensors", cwd=tmp_path)
    assert diff.returncode == 1 and "shared: 2.bias  1/1 differ" in diff.stdout and "  16" in diff.stdout


class _RunsCode:
    """Unpickling this would run a shell command that leaves a file behind."""

    def __reduce__(self):
        return os.system, ("touch pwned",)


def test_a_malicious_pickle_is_refused_never_executed(tmp_path):
    torch.save({"model": {"w": torch.ones(2)}, "hook": _RunsCode()}, tmp_path / "evil.pt")
    (tmp_path / "run").mkdir()
    shutil.copy(tmp_path / "evil.pt", tmp_path / "run" / "step1_rank0.pt")
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"hook": _RunsCode()}))

    single = _harness("inspect", "evil.pt", cwd=tmp_path)
    assert single.returncode == 1
    assert "evil.pt: unreadable" in single.stdout and "cannot be read without executing code" in single.stdout
    assert "system" in single.stdout
    folder = _harness("diff", "run", "evil.pt", cwd=tmp_path)
    assert folder.returncode == 2 and "step1_rank0.pt" in folder.stderr and "damaged" in folder.stderr
    # a plain pickle is read as data only: the call it names is shown, never made
    plain = read_checkpoint(str(tmp_path / "plain.pkl"))
    assert plain.format == "pickle" and plain.trees[("shared", "file")]["hook"]["__object__"].endswith(".system")
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")


@pytest.mark.slow  # a fresh interpreter per command; the fast suite keeps one of them
def test_bad_input_is_named_with_what_to_pass(tmp_path):
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    (tmp_path / "only_latest").mkdir()
    (tmp_path / "only_latest" / "latest").write_text("10")
    text = _harness("inspect", "notes.txt", cwd=tmp_path)
    assert text.returncode == 2
    assert "notes.txt: not a checkpoint file this harness reads" in text.stderr and "torch.save" in text.stderr
    with pytest.raises(ContentsError, match=r"only_latest: not a checkpoint folder of a known format"):
        read_checkpoint(str(tmp_path / "only_latest"))


def test_layouts_are_recognised_by_their_own_markers(tmp_path):
    # DeepSpeed: `latest` plus a tag folder holding its files (no deepspeed needed to write the shape of one)
    ds = tmp_path / "ds"
    (ds / "global_step10").mkdir(parents=True)
    torch.save({"module": {"w": torch.ones(2)}, "global_steps": 10},
               ds / "global_step10" / "mp_rank_00_model_states.pt")
    torch.save({"optimizer_state_dict": {}}, ds / "global_step10" / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    (ds / "latest").write_text("global_step10")
    c = read_checkpoint(str(ds))
    assert c.format == "deepspeed" and c.summary["tag"] == "global_step10" and c.summary["global_steps"] == 10
    # a script's model.pt / optimizer.pt are not Accelerate's save_state; a legacy-format torch.save is read too
    plain = tmp_path / "plain"
    plain.mkdir()
    torch.save({"w": torch.ones(3)}, plain / "model.pt")
    torch.save(_state(1), plain / "optimizer.pt", _use_new_zipfile_serialization=False)
    c = read_checkpoint(str(plain))
    assert c.format == "files" and c.ok and ("shared", "model/w") in c.tensors
    assert ("shared", "optimizer/rng_numpy/#1") in c.tensors


def test_counts_are_singular_for_one():
    from harness.contents.diff import diff_contents as diff
    from harness.contents.model import CheckpointContents, summarize

    assert (summarize([1]), summarize([1, 2]), summarize({"a": 1}), summarize({})) == \
        ("[1 item]", "[2 items]", "{1 key}", "{0 keys}")
    a, b = CheckpointContents("a", "torch"), CheckpointContents("b", "torch")
    a.trees[("shared", "file")], b.trees[("shared", "file")] = {"x": [1]}, {"x": [1, 2]}
    (t,) = diff(a, b).trees
    assert (t.path, t.a, t.b) == ("x", "[1 item]", "[2 items]")


def test_inspect_into_a_reader_that_went_away_exits_141_with_no_error(tmp_path):
    """`harness inspect --json CKPT | head -c 200`: the JSON is larger than stdout's buffer, so the command's
    own write fails, and then the JSON error report would too. Exit 141 (as SIGPIPE would end it), nothing on
    stderr; inspect counts an OSError (a BrokenPipeError is one) as bad input, which must not catch it first."""
    from safetensors.torch import save_file

    path = str(tmp_path / "many.safetensors")
    save_file({f"layer{i}.weight": torch.zeros(2) for i in range(400)}, path)
    proc = subprocess.Popen([HARNESS, "inspect", path, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    proc.stdout.close()  # before the command prints anything (its start-up takes longer)
    assert proc.wait(timeout=120) == 141
    assert proc.stderr.read() == ""
    shown = _harness("inspect", path, "--json", cwd=tmp_path)  # the same command, read: larger than the buffer
    assert shown.returncode == 0 and len(shown.stdout) > 8192
