"""harness.private_apis: every listed private API exists in the installed versions, each entry names
a real use, and a missing one gives a clear error (naming it and the versions) where it is used."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from harness import private_apis
from support import REPO


def _installed(package: str) -> bool:
    return package == "python" or importlib.util.find_spec(package) is not None


_DEEPSPEED_GROUPS = sorted({api.group for api in private_apis.APIS if api.package == "deepspeed"})


@pytest.mark.parametrize("group", [g for g in private_apis.GROUPS if g not in _DEEPSPEED_GROUPS])
def test_every_listed_api_exists_in_the_installed_versions(group):
    packages = {api.package for api in private_apis.APIS if api.group == group}
    if not all(_installed(p) for p in packages):
        pytest.skip(f"{', '.join(sorted(packages))} not installed")
    assert private_apis.missing(group) == []


@pytest.mark.slow
@pytest.mark.skipif(not _installed("deepspeed"), reason="deepspeed not installed")
def test_every_listed_deepspeed_api_exists_in_the_installed_version():
    """In a fresh interpreter: importing deepspeed here would leave it imported in this test worker."""
    code = ("from harness import private_apis\n"
            f"print([(api.path, why) for g in {_DEEPSPEED_GROUPS!r} for api, why in private_apis.missing(g)])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "DS_ACCELERATOR": "cpu"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


@pytest.mark.parametrize("api", private_apis.APIS, ids=lambda api: api.path)
def test_each_entry_names_a_real_use(api):
    """The list stays honest: every module said to use an API mentions it, and its package has tested versions."""
    assert api.package in private_apis.TESTED and api.how in ("attr", "code") and api.used_for
    for module in api.used_in:
        path = os.path.join(REPO, *module.replace("harness.scenarios", "scenarios").split(".")) + ".py"
        with open(path) as f:
            assert api.name in f.read(), f"{module} does not use {api.path}: drop it from its used_in"


def test_a_missing_api_raises_naming_it_and_the_versions(monkeypatch):
    """Hypothesis's global_force_seed taken away: the fuzzer's seeding (its one user) fails with the clear error."""
    from hypothesis import core

    from harness.fuzz.campaign import seeded

    monkeypatch.delattr(core, "global_force_seed")
    monkeypatch.setattr(private_apis, "_CHECKED", set())
    with pytest.raises(private_apis.PrivateAPIError) as err:
        with seeded(7):
            pass
    text = str(err.value)
    assert "hypothesis.core.global_force_seed" in text
    assert f"hypothesis {private_apis.installed_version('hypothesis')}" in text
    assert "tested with hypothesis " + ", ".join(private_apis.TESTED["hypothesis"]) in text
    assert "harness.fuzz.campaign" in text and "pip install -c ci/constraints.txt" in text


def test_an_instance_attribute_gone_from_the_class_code_is_missing(monkeypatch):
    """A "code" entry: DataLoader's code no longer naming _iterator counts as missing, with why."""
    from torch.utils.data import dataloader

    monkeypatch.setattr(private_apis, "_CHECKED", set())
    monkeypatch.setattr(private_apis, "_CODE_NAMES", {})
    real = private_apis._code_names
    monkeypatch.setattr(private_apis, "_code_names",
                        lambda cls: real(cls) - {"_iterator"} if cls is dataloader.DataLoader else real(cls))
    gone = private_apis.missing("torch.dataloader")
    assert [(api.path, why) for api, why in gone] == [
        ("torch.utils.data.dataloader.DataLoader._iterator",
         "the code of torch.utils.data.dataloader.DataLoader no longer sets or reads _iterator")]
    with pytest.raises(private_apis.PrivateAPIError, match=r"DataLoader\._iterator \(torch "):
        private_apis.require("torch.dataloader")


def test_an_entry_with_a_fallback_does_not_raise(monkeypatch):
    import threading

    monkeypatch.setattr(private_apis, "_CHECKED", set())
    monkeypatch.delattr(threading, "_shutdown")
    assert [api.name for api, _ in private_apis.missing("python")] == ["_shutdown"]
    private_apis.require("python")  # threads are then not joined: listed, not fatal


def test_import_time_check_and_no_optional_imports():
    """In a fresh interpreter: importing the harness's parts imports neither deepspeed nor hypothesis; and
    with DDP's Reducer._push_all_rebuilt_params gone, importing harness.checkpoint fails at once with the
    clear error rather than deep inside a training job."""
    code = (
        "import sys\n"
        "import harness, harness.probe, harness.checkpoint, harness.launch.rank\n"
        "assert 'deepspeed' not in sys.modules and 'hypothesis' not in sys.modules, "
        "[m for m in ('deepspeed', 'hypothesis') if m in sys.modules]\n"
        "for name in [m for m in sys.modules if m.startswith('harness.checkpoint')]:\n"
        "    del sys.modules[name]\n"
        "import torch._C._distributed_c10d as c10d\n"
        "del c10d.Reducer._push_all_rebuilt_params\n"
        "from harness import private_apis\n"
        "private_apis._CHECKED.clear()\n"
        "try:\n"
        "    import harness.checkpoint\n"
        "except private_apis.PrivateAPIError as e:\n"
        "    print('ERROR:', e)\n"
        "else:\n"
        "    print('imported')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ERROR: resume-harness relies on private APIs" in out.stdout, out.stdout
    assert "torch._C._distributed_c10d.Reducer._push_all_rebuilt_params (torch " in out.stdout
    assert "tested with torch " + ", ".join(private_apis.TESTED["torch"]) in out.stdout
