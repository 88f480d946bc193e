"""save_model / load_checkpoint_in_model: the Hugging Face safetensors layout, read and written both ways."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch

from harness.checkpoint import Checkpointer, load_checkpoint_in_model, parse_size, save_model
from harness.checkpoint.model_files import split_into_shards
from support.checkpoint_jobs import state_bytes


def _net(seed=0, width=64):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.LayerNorm(width), torch.nn.Linear(width, 3))
    net.register_buffer("steps", torch.tensor([7], dtype=torch.int64))
    return net


def test_sizes_parse_like_accelerate():
    from accelerate.utils.modeling import convert_file_size_to_int

    for text in ["10GB", "500MB", "1GiB", "1.5MiB", "3KiB", "7kb", "5Gb", "2mb", "0GB", 123]:
        assert parse_size(text) == convert_file_size_to_int(text), text
    assert parse_size("1000") == parse_size("1000B") == 1000  # Accelerate refuses these two; plain bytes are clear


def test_one_file_when_it_fits_and_the_hf_sharded_layout_when_not(tmp_path):
    net = _net()
    assert save_model(net, tmp_path / "one") == [str(tmp_path / "one" / "model.safetensors")]
    written = Checkpointer().save_model(net, tmp_path / "many", max_shard_size="10KB")  # the 16 KB weight alone
    names = sorted(os.listdir(tmp_path / "many"))
    assert names == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                     "model.safetensors.index.json"] and len(written) == 3
    index = json.loads((tmp_path / "many" / "model.safetensors.index.json").read_text())
    sd = net.state_dict()
    assert set(index["weight_map"]) == set(sd)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in sd.values())
    from safetensors import safe_open

    for key, name in index["weight_map"].items():
        with safe_open(str(tmp_path / "many" / name), "pt") as f:
            assert f.metadata() == {"format": "pt"}
            assert state_bytes(f.get_tensor(key)) == state_bytes(sd[key])


@pytest.mark.slow
def test_shards_split_as_huggingface_hub_splits(tmp_path):
    from huggingface_hub import split_torch_state_dict_into_shards

    sd = _net(width=48).state_dict()
    for limit in [1, 500, 9300, 12000, 10**9]:
        theirs = split_torch_state_dict_into_shards(sd, max_shard_size=limit)
        ours = split_into_shards(sd, limit)
        assert sorted(sorted(s) for s in ours) == sorted(sorted(t) for t in theirs.filename_to_tensors.values()), limit


@pytest.mark.slow
def test_accelerate_reads_ours_and_we_read_accelerates(tmp_path):
    from accelerate import Accelerator
    from accelerate.utils import load_checkpoint_in_model as accelerate_load

    net = _net()
    for limit in ["10GB", "10KB"]:
        folder = tmp_path / limit
        save_model(net, folder, max_shard_size=limit)
        theirs = _net(seed=1)
        accelerate_load(theirs, str(folder), strict=True)
        assert state_bytes(theirs.state_dict()) == state_bytes(net.state_dict())

        Accelerator(cpu=True).save_model(net, tmp_path / f"acc-{limit}", max_shard_size=limit)
        assert sorted(os.listdir(tmp_path / f"acc-{limit}")) == sorted(os.listdir(folder))
        ours = _net(seed=2)
        load_checkpoint_in_model(ours, tmp_path / f"acc-{limit}", strict=True)
        assert state_bytes(ours.state_dict()) == state_bytes(net.state_dict())


def test_resaving_the_same_model_replaces_its_shards(tmp_path):
    net = _net()
    save_model(net, tmp_path, max_shard_size="10KB")
    assert len([n for n in os.listdir(tmp_path) if n.startswith("model-")]) == 2
    (tmp_path / "config.json").write_text("{}")  # not a weight file: kept
    with torch.no_grad():
        net[0].weight.add_(1)
    save_model(net, tmp_path)  # fits in one file now: the two shards and the index are stale
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]
    again = _net(seed=3)
    load_checkpoint_in_model(again, tmp_path / "model.safetensors", strict=True)
    assert state_bytes(again.state_dict()) == state_bytes(net.state_dict())


def test_loader_names_missing_keys_and_shapes(tmp_path):
    save_model(_net(), tmp_path)
    bigger = torch.nn.Sequential(*_net(), torch.nn.Linear(3, 1))
    with pytest.raises(ValueError, match=r"missing keys \['3.bias', '3.weight'\]"):
        load_checkpoint_in_model(bigger, tmp_path, strict=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_checkpoint_in_model(bigger, tmp_path)  # Accelerate's default strict=False: loads what matches
    assert "missing keys" in str(caught[0].message)
    assert torch.equal(bigger[0].weight, _net()[0].weight)
    with pytest.raises(ValueError, match=r"0.weight: file \(64, 64\), model \(8, 8\)"):
        load_checkpoint_in_model(_net(width=8), tmp_path)
    with pytest.warns(UserWarning, match="only safetensors"):
        save_model(_net(), tmp_path / "unsafe", safe_serialization=False)
    assert os.listdir(tmp_path / "unsafe") == ["model.safetensors"]
