"""harness inspect / harness diff on checkpoints written in this process: native and DCP, plus pickles
that try to run code. The multi-rank backends, Accelerate and the CLI are in test_contents_backends.py."""

from __future__ import annotations

import ast
import io
import os
import pickle
import shutil

import pytest
import torch

from harness.contents import diff_contents, read_checkpoint
from harness.contents.pickles import Opaque, load_data_pickle
from harness.contents.readers import ContentsError
from support import REPO
from support.checkpoint_jobs import make_job, train


def _flip_lowest_bit(t: torch.Tensor, index: int = 0) -> None:
    """One ULP away, in place: the lowest mantissa bit of one float32 element."""
    t.data.view(-1).view(torch.int32)[index] ^= 1


def _native_pair(tmp_path):
    """Two checkpoints of one job, saved back to back; before the second save one bit of the first
    Linear's weight was flipped."""
    job = make_job(tmp_path / "p", automatic_checkpoint_naming=False)
    train(job, 2)
    a = job[0].save_state(str(tmp_path / "a"))
    _flip_lowest_bit(job[1][0].weight, 5)
    b = job[0].save_state(str(tmp_path / "b"))
    return job, a, b


def test_native_inspect_lists_the_tensors_and_diff_names_the_flipped_one(tmp_path):
    job, a, b = _native_pair(tmp_path)
    model = job[1]
    ca = read_checkpoint(a)
    assert ca.format == "native" and ca.ok and ca.summary["step"] == 2
    assert all(f.status == "ok" for f in ca.files)
    weights = {k[1][len("models/0/"):]: e for k, e in ca.tensors.items() if k[0] == "shared" and k[1].startswith("models/0/")}
    assert set(weights) == set(model.state_dict())
    w = weights["0.weight"]
    assert (w.dtype, w.shape, w.nbytes, w.file) == ("float32", (8, 4), 128, "shared/model_0.safetensors")
    assert {("rank0", "rng/torch"), ("rank0", "rng/numpy/#1")} <= {k for k in ca.tensors if k[0] == "rank0"}
    assert ca.trees[("shared", "state")]["step"] == 2

    same = diff_contents(ca, read_checkpoint(a))
    assert same.identical and same.exit_code == 0 and same.compared == len(ca.tensors)

    d = diff_contents(ca, read_checkpoint(b))
    assert d.exit_code == 1 and not d.only_a and not d.only_b and not d.trees
    assert [(t.group, t.name) for t in d.tensors] == [("shared", "models/0/0.weight")]
    assert d.first.kind == "values" and d.first.n_diff == 1 and d.first.max_ulp == 1 and d.first.max_abs_diff > 0


def test_native_different_tensor_sets_state_and_damage(tmp_path):
    _, a, _ = _native_pair(tmp_path)
    wider = make_job(tmp_path / "q", width=9, automatic_checkpoint_naming=False)  # different shapes
    train(wider, 2)
    c = wider[0].save_state(str(tmp_path / "c"))
    d = diff_contents(read_checkpoint(a), read_checkpoint(c))
    kinds = {t.name: t.kind for t in d.tensors}
    assert kinds["models/0/0.weight"] == "shape" and kinds["models/0/2.bias"] == "values"
    assert (d.first.name, d.first.kind, d.first.shape_a, d.first.shape_b) == ("models/0/0.bias", "shape", (8,), (9,))

    # a tensor set that differs: drop the custom object's buffer from one side's tree and tensors
    ca, cb = read_checkpoint(a), read_checkpoint(a)
    del cb.tensors[("shared", "custom/0/buffer")]
    cb.trees[("rank0", "state")]["step"] = 3
    d = diff_contents(ca, cb)
    assert d.only_a == [("shared", "custom/0/buffer")] and d.only_b == [] and d.exit_code == 1
    assert [(t.group, t.tree, t.path, t.a, t.b) for t in d.trees] == [("rank0", "state", "step", 2, 3)]
    d = diff_contents(cb, ca)
    assert d.only_b == [("shared", "custom/0/buffer")] and d.only_a == []

    # one flipped byte in a file: inspect fails, naming the file
    bad = tmp_path / "bad"
    shutil.copytree(a, bad)
    path = bad / "rank0" / "state.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x10
    path.write_bytes(bytes(raw))
    cbad = read_checkpoint(str(bad))
    assert not cbad.ok
    assert [(f.path, f.status) for f in cbad.failed_files] == [("rank0/state.safetensors", "mismatch")]
    assert "checksum mismatch" in cbad.failed_files[0].detail
    assert not any(k[0] == "rank0" and k[1].startswith("rng") for k in cbad.tensors)  # never parsed

    with pytest.raises(ContentsError, match="not a checkpoint folder of a known format"):
        read_checkpoint(str(tmp_path))


def test_dcp_folder_is_assembled_and_diffed(tmp_path):
    import torch.distributed.checkpoint as dcp

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    opt.step()

    def save(where):
        state = {"model": model.state_dict(), "optim": opt.state_dict(), "extra": {"step": 7, "lr": [0.5]}}
        with pytest.warns(UserWarning, match="single process"):
            dcp.save(state, checkpoint_id=str(tmp_path / where), no_dist=True)

    save("a")
    _flip_lowest_bit(model.bias, 2)
    save("b")
    ca, cb = read_checkpoint(str(tmp_path / "a")), read_checkpoint(str(tmp_path / "b"))
    assert ca.format == "dcp" and ca.ok and all(f.status == "unverified" for f in ca.files)
    w = ca.tensors[("shared", "model.weight")]
    assert (w.dtype, w.shape) == ("float32", (3, 4))
    assert torch.equal(cb.tensors[("shared", "model.bias")].tensor, model.bias.detach())
    assert ca.trees[("shared", "items")]["extra.step"] == 7
    d = diff_contents(ca, cb)
    assert [(t.name, t.max_ulp, t.n_diff) for t in d.tensors] == [("model.bias", 1, 1)] and not d.trees
    assert diff_contents(ca, read_checkpoint(str(tmp_path / "a"))).identical

    # different tensor sets, each side listed; a dtype mismatch; a missing state leaf
    with pytest.warns(UserWarning, match="single process"):
        dcp.save({"model": {"weight": model.weight.double(), "bias": model.bias}, "extra": {"step": 7}, "new": torch.ones(2)},
                 checkpoint_id=str(tmp_path / "c"), no_dist=True)
    d = diff_contents(cb, read_checkpoint(str(tmp_path / "c")))
    assert d.only_b == [("shared", "new")]
    assert d.only_a == sorted(((g, n) for g, n in cb.tensors if n.startswith("optim.")), key=lambda k: k[1])
    assert [(t.name, t.kind, t.dtype_a, t.dtype_b) for t in d.tensors] == [("model.weight", "dtype", "float32", "float64")]
    assert ("extra.lr", True, False) in [(t.path, t.present_a, t.present_b) for t in d.trees]


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


class _Custom:
    """A class the reader must not import or run: its __setstate__ would leave a file behind."""

    def __init__(self):
        self.scale = 2.0

    def __setstate__(self, state):
        open("setstate-ran", "w").close()


def test_pickles_that_would_run_code_are_read_as_data_or_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # DCP .metadata: a plain pickle, read with a find_class that never imports
    (tmp_path / "meta.pkl").write_bytes(pickle.dumps({"x": _RunsCode(), "c": _Custom()}))
    obj = load_data_pickle(str(tmp_path / "meta.pkl"))
    assert isinstance(obj["x"], Opaque) and type(obj["x"]).qualname.endswith(".system") and obj["x"].args == ("touch pwned",)
    assert type(obj["c"]).qualname.endswith("._Custom") and obj["c"].state == {"scale": 2.0}
    # torch.save archives in an Accelerate folder: weights_only; an unknown class only as an inert stand-in,
    # a global of a module torch blocks (os.system) refused, naming the file
    acc = tmp_path / "acc"
    acc.mkdir()
    for name, obj in (("scheduler.bin", {"last_epoch": 3, "scaler": _Custom()}), ("optimizer.bin", {"hook": _RunsCode()})):
        buf = io.BytesIO()
        torch.save(obj, buf)
        (acc / name).write_bytes(buf.getvalue())
    contents = read_checkpoint(str(acc))
    assert contents.format == "accelerate"
    scaler = contents.trees[("shared", "scheduler")]["scaler"]
    assert scaler["__object__"].endswith("._Custom") and scaler["state"] == {"scale": 2.0}
    assert [(f.path, f.status) for f in contents.failed_files] == [("optimizer.bin", "unreadable")]
    assert "without executing code" in contents.failed_files[0].detail and "system" in contents.failed_files[0].detail
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "setstate-ran").exists()


def test_only_the_cli_imports_harness_contents():
    root = os.path.join(REPO, "harness")
    bad = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            if not name.endswith(".py") or rel.startswith("contents/"):
                continue
            text = open(path).read()
            if "contents" not in text:
                continue
            for node in ast.walk(ast.parse(text)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
                if any(m == "harness.contents" or m.startswith("harness.contents.") for m in mods) and not rel.startswith("cli/"):
                    bad.append(rel)
    assert not bad, bad
    allowed = {"checkpoint", "oracle", "tensors", "contents"}
    for name in os.listdir(os.path.join(root, "contents")):
        if name.endswith(".py"):
            for node in ast.walk(ast.parse(open(os.path.join(root, "contents", name)).read())):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("harness."):
                    assert node.module.split(".")[1] in allowed, (name, node.module)
