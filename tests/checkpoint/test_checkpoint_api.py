"""Accelerate's checkpoint API, as its users call it: constructor, save_state/load_state signatures, prepare, registration."""

from __future__ import annotations

import warnings

import pytest
import torch

from harness.checkpoint import Checkpointer, ProjectConfiguration, RegistrationError
from support.checkpoint_jobs import state_bytes


def _model_and_optimizer(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    return model, opt


def test_project_dir_given_to_the_checkpointer_like_the_accelerator(tmp_path):
    config = ProjectConfiguration(automatic_checkpoint_naming=True, total_limit=2)  # no project_dir: fine
    ckpt = Checkpointer(project_dir=tmp_path, project_config=config)
    ckpt.prepare(torch.nn.Linear(2, 2))
    assert ckpt.save_state() == str(tmp_path / "checkpoints" / "checkpoint_0")
    assert ckpt.project_dir == tmp_path and config.logging_dir == tmp_path and ckpt.save_iteration == 1
    assert Checkpointer(tmp_path).project_dir == tmp_path  # a folder positionally; a ProjectConfiguration still works
    with pytest.raises(ValueError, match="differs from project_config.project_dir"):
        Checkpointer(project_dir=tmp_path / "a", project_config=ProjectConfiguration(tmp_path / "b"))
    with pytest.raises(ValueError, match="needs a project_dir"):
        Checkpointer(ProjectConfiguration(automatic_checkpoint_naming=True)).save_state()
    from accelerate.utils import ProjectConfiguration as AcceleratesOwn  # a script that kept its import: copied

    theirs = Checkpointer(project_dir=tmp_path, project_config=AcceleratesOwn(total_limit=2, iteration=4))
    assert (theirs.project_dir, theirs.project_configuration.total_limit, theirs.save_iteration) == (tmp_path, 2, 4)


def test_accelerate_keywords_are_accepted(tmp_path):
    model, opt = _model_and_optimizer()
    ckpt = Checkpointer()
    ckpt.prepare(model, opt)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ckpt.save_state(tmp_path / "a", safe_serialization=True)
        assert not caught
        ckpt.save_state(tmp_path / "b", safe_serialization=False, exclude_frozen_parameters=True)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and "pickle-free" in messages[0] and "exclude_frozen_parameters" in messages[1]
    saved = state_bytes({"m": model.state_dict(), "o": opt.state_dict()})
    for where in ("cpu", "on_device", torch.device("cpu"), None):
        again, again_opt = _model_and_optimizer(seed=1)
        fresh = Checkpointer()
        fresh.prepare(again, again_opt)
        fresh.load_state(tmp_path / "b", map_location=where)
        assert state_bytes({"m": again.state_dict(), "o": again_opt.state_dict()}) == saved


def test_prepare_passes_through_what_it_does_not_manage(tmp_path):
    model, opt = _model_and_optimizer()
    custom = type("Custom", (), {"state_dict": lambda self: {}, "load_state_dict": lambda self, sd: None})()
    ckpt = Checkpointer()
    out = ckpt.prepare(model, opt, None, 3, "text", custom)
    assert out[0] is model and out[1] is opt and out[2:] == (None, 3, "text", custom)
    counts = ckpt._registry.counts()
    assert (counts["models"], counts["optimizers"], counts["custom"]) == (1, 1, 0)  # like Accelerate: not tracked
    assert ckpt.prepare(None) is None


def test_registration_is_all_or_nothing(monkeypatch):
    ckpt = Checkpointer()
    net = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError) as err:
        ckpt.register_for_checkpointing(net, torch.tensor([1]), None)
    text = str(err.value)
    assert "Item at index 1, `Tensor`" in text and "Item at index 2, `NoneType`" in text and "index 0" not in text
    assert ckpt._registry.counts()["models"] == 0

    def refuse(loader):
        raise TypeError("cannot resume this loader")

    monkeypatch.setattr("harness.checkpoint.state.wrap_loader", refuse)
    loader = torch.utils.data.DataLoader(list(range(4)))
    with pytest.raises(RegistrationError, match=r"Item at index 2, `DataLoader`: cannot resume this loader"):
        ckpt.prepare(net, None, loader)
    assert ckpt._registry.counts()["models"] == 0  # net was not registered either


def test_skip_first_batches_follows_accelerates_recipe(tmp_path):
    """Accelerate's resume recipe after the swap: no double skip, a fresh loader is moved, a mismatch raises."""
    from harness.checkpoint import Checkpointer

    def loader():
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(12)), batch_size=2)

    ckpt = Checkpointer()
    dl = ckpt.prepare(loader())
    it = iter(dl)
    first = [next(it)[0].tolist() for _ in range(3)]
    ckpt.save_state(tmp_path / "c")
    rest = [b[0].tolist() for b in it]

    resumed = Checkpointer()
    dl2 = resumed.prepare(loader())
    resumed.load_state(tmp_path / "c")
    assert resumed.skip_first_batches(dl2, 3) is dl2
    assert [b[0].tolist() for b in dl2] == rest
    with pytest.raises(ValueError, match="restored at batch 3"):
        other = Checkpointer()
        dl3 = other.prepare(loader())
        other.load_state(tmp_path / "c")
        other.skip_first_batches(dl3, 2)

    fresh = Checkpointer().skip_first_batches(Checkpointer().prepare(loader()), 3)
    assert [b[0].tolist() for b in fresh] == rest
    assert first == [[0, 1], [2, 3], [4, 5]]
