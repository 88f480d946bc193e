"""Interop: folders written by HF Accelerate's save_state load only behind the explicit pickle opt-in."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from support.checkpoint_jobs import Counter, next_draws, state_bytes
from harness.checkpoint import Checkpointer, NotACheckpointError, UnsafeCheckpointError
from harness.checkpoint.from_accelerate import convert

accelerate = pytest.importorskip("accelerate")


def _objects(seed):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Linear(5, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2, gamma=0.5)
    return model, opt, sched, Counter()


@pytest.fixture
def accelerate_folder(tmp_path):
    """A real Accelerate checkpoint, and the state and next RNG draws at the time it was saved."""
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    model, opt, sched, counter = _objects(0)
    model, opt, sched = acc.prepare(model, opt, sched)
    acc.register_for_checkpointing(counter)
    for _ in range(3):
        model(torch.randn(4, 3)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        counter.n += 1
    folder = tmp_path / "acc"
    acc.save_state(folder)
    state = state_bytes({"m": model.state_dict(), "o": opt.state_dict(), "s": sched.state_dict(), "c": counter.state_dict()})
    return folder, state, next_draws()


def _native(seed=9):
    model, opt, sched, counter = _objects(seed)
    ckpt = Checkpointer()
    ckpt.prepare(model, opt, sched)
    ckpt.register_for_checkpointing(counter)
    return ckpt, (model, opt, sched, counter)


def _state(objs):
    model, opt, sched, counter = objs
    return state_bytes({"m": model.state_dict(), "o": opt.state_dict(), "s": sched.state_dict(), "c": counter.state_dict()})


def test_load_accelerate_folder_with_opt_in(accelerate_folder):
    folder, state, draws = accelerate_folder
    ckpt, objs = _native()
    torch.manual_seed(1), np.random.seed(1)
    ckpt.load_state(folder, allow_unsafe_pickle=True)
    assert _state(objs) == state
    assert next_draws() == draws


def test_accelerate_folder_refused_without_opt_in(accelerate_folder):
    folder, _, _ = accelerate_folder
    ckpt, _ = _native()
    with pytest.raises(NotACheckpointError, match="HF Accelerate checkpoint: convert it with `harness convert`"):
        ckpt.load_state(folder)


def test_convert_needs_opt_in_and_never_unpickles_without_it(accelerate_folder, tmp_path, monkeypatch):
    folder, _, _ = accelerate_folder
    marker = tmp_path / "pwned"

    class Boom:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    with open(folder / "custom_checkpoint_0.pkl", "wb") as f:
        pickle.dump(Boom(), f)
    with pytest.raises(UnsafeCheckpointError, match="custom_checkpoint_0.pkl.*can execute arbitrary code"):
        convert(folder, tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_convert_writes_a_pickle_free_native_checkpoint(accelerate_folder, tmp_path):
    folder, state, draws = accelerate_folder
    out = convert(folder, tmp_path / "native", allow_unsafe_pickle=True)
    for root, _, names in os.walk(out):
        for name in names:
            head = open(os.path.join(root, name), "rb").read(9)
            assert (head[8:9] if name.endswith(".safetensors") else head[:1]) == b"{", name  # JSON or safetensors
    ckpt, objs = _native()
    ckpt.load_state(out)
    assert _state(objs) == state
    assert next_draws() == draws


def test_cli_convert(accelerate_folder, tmp_path, capsys):
    from harness.cli import main

    folder, state, _ = accelerate_folder
    assert main(["convert", str(folder), str(tmp_path / "n")]) == 2
    assert "--allow-unsafe-pickle" in capsys.readouterr().err
    assert main(["convert", str(folder), str(tmp_path / "n"), "--allow-unsafe-pickle"]) == 0
    ckpt, objs = _native()
    ckpt.load_state(tmp_path / "n")
    assert _state(objs) == state
