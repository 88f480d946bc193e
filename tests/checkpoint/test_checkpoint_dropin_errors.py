"""A drop-in raises what callers of Accelerate already catch: for each bad call, the same call is made on an
`Accelerator(cpu=True)` and on the Checkpointer, and ours must be an instance of the type Accelerate raised
(ours are subclasses: they keep their own names and messages, which name the rank or file)."""

from __future__ import annotations

import pytest
import torch

from support.checkpoint_jobs import Counter
from harness.checkpoint import (Checkpointer, IncompatibleCheckpointError, MapLocationError, NotACheckpointError,
                                ProjectConfiguration)

accelerate = pytest.importorskip("accelerate")


def _model(width=5):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, width), torch.nn.Linear(width, 2))


def _theirs(project=None, width=5, customs=1, groups=1):
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration as AccConfig

    acc = Accelerator(cpu=True, project_config=AccConfig(project_dir=project) if project else None)
    model = _model(width)
    params = [{"params": [p]} for p in model.parameters()] if groups > 1 else model.parameters()
    acc.prepare(model, torch.optim.AdamW(params, lr=0.1))
    acc.register_for_checkpointing(*[Counter() for _ in range(customs)])
    return acc


def _ours(project=None, width=5, customs=1, groups=1):
    ckpt = Checkpointer(ProjectConfiguration(project) if project else None)
    model = _model(width)
    params = [{"params": [p]} for p in model.parameters()] if groups > 1 else model.parameters()
    ckpt.prepare(model, torch.optim.AdamW(params, lr=0.1))
    ckpt.register_for_checkpointing(*[Counter() for _ in range(customs)])
    return ckpt


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("saved")
    _theirs().save_state(str(tmp / "theirs"))
    _ours().save_state(tmp / "ours")
    return tmp / "theirs", tmp / "ours"


def _raised(call) -> BaseException:
    with pytest.raises(Exception) as e:
        call()
    return e.value


# (what, call on Accelerate, call on ours): each gets (folders, tmp_path)
CALLS = [
    ("missing folder", lambda f, t: _theirs().load_state(str(t / "nope")), lambda f, t: _ours().load_state(t / "nope")),
    ("no folder, no automatic naming", lambda f, t: _theirs(str(t / "p")).load_state(),
     lambda f, t: _ours(t / "p").load_state()),
    ("unsupported map_location", lambda f, t: _theirs().load_state(str(f[0]), map_location="meta"),
     lambda f, t: _ours().load_state(f[1], map_location="meta")),
    ("another architecture", lambda f, t: _theirs(width=6).load_state(str(f[0])),
     lambda f, t: _ours(width=6).load_state(f[1])),
    ("another number of custom objects", lambda f, t: _theirs(customs=2).load_state(str(f[0])),
     lambda f, t: _ours(customs=2).load_state(f[1])),
    ("other optimizer parameter groups", lambda f, t: _theirs(groups=4).load_state(str(f[0])),
     lambda f, t: _ours(groups=4).load_state(f[1])),
]


@pytest.mark.parametrize("what,theirs,ours", CALLS, ids=[c[0] for c in CALLS])
def test_ours_is_an_instance_of_what_accelerate_raises(folders, tmp_path, what, theirs, ours):
    expected = type(_raised(lambda: theirs(folders, tmp_path)))
    got = _raised(lambda: ours(folders, tmp_path))
    assert isinstance(got, expected), f"{what}: Accelerate raises {expected.__name__}, ours {type(got).__mro__}"


def test_the_error_types_and_their_messages():
    assert issubclass(MapLocationError, ValueError) and issubclass(MapLocationError, TypeError)
    assert issubclass(NotACheckpointError, FileNotFoundError) and issubclass(NotACheckpointError, ValueError)
    assert issubclass(IncompatibleCheckpointError, RuntimeError) and issubclass(IncompatibleCheckpointError, ValueError)


def test_map_location_error_names_the_rank(folders):
    with pytest.raises(MapLocationError, match=r"rank 0: map_location='gpu0' is not a device"):
        _ours().load_state(folders[1], map_location="gpu0")
