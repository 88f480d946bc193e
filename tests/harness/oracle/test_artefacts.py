"""harness.oracle.artefacts: the files a run leaves in its run folder, indexed and compared tensor by tensor
(temp folders built in this process), and the baseline cache keeping the index."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
import xxhash
from safetensors.torch import save_file

from harness.engine import baseline as baseline_mod
from harness.oracle.artefacts import (ArtefactError, compare_artefact_files, compare_artefacts, index_artefacts,
                                      is_rng_tensor, rank_of, unstable_between)


def _weights(eps: float = 0.0) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"0.weight": torch.randn(4, 3, generator=g) + eps, "0.bias": torch.zeros(4)}


def _run(folder, *, ema_eps=0.0, log="loss 1.0\n", metrics=0.0) -> str:
    """A run folder as a script leaves it: a checkpoint with RNG state, an exported EMA, logs, metrics."""
    os.makedirs(folder / "ckpt" / "step4", exist_ok=True)
    torch.manual_seed(0)
    torch.save({"model": _weights(), "step": 4, "rng": {"torch": torch.get_rng_state()}},
               folder / "ckpt" / "step4" / "rank1.pt")
    torch.save(_weights(ema_eps), folder / "ema.pt")
    (folder / "train.log").write_text(log)
    (folder / "metrics.json").write_text(json.dumps({"loss": 1.0, "wall_s": metrics}))
    return str(folder)


def test_index_reads_each_format_and_skips_hidden_files(tmp_path):
    run = tmp_path / "run"
    (run / "sub").mkdir(parents=True)
    (run / ".staging").mkdir()
    (run / "__pycache__").mkdir()
    torch.save({"model": {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, "opts": [{"lr": 0.1}],
                "arr": np.arange(3, dtype=np.int32), "step": 3}, run / "ckpt.pt")
    save_file({"x": torch.ones(2, dtype=torch.bfloat16)}, str(run / "sub" / "w.safetensors"))
    np.save(run / "a.npy", np.arange(4, dtype=np.float64))
    np.savez(run / "b.npz", p=np.ones(2, np.float32), q=np.zeros(3, np.int64))
    (run / "m.json").write_text('{"loss": 1.0}')
    (run / "log.txt").write_text("hello")
    (run / "blob.bin").write_bytes(b"\x00\x01\x02")
    (run / "empty").write_bytes(b"")
    torch.save({"w": torch.ones(1)}, run / "partial.pt.tmp")
    torch.save({"w": torch.ones(1)}, run / "legacy.pt", _use_new_zipfile_serialization=False)
    (run / ".hidden.pt").write_bytes(b"x")
    (run / ".staging" / "x.pt").write_bytes(b"x")
    (run / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"x")
    os.symlink("ckpt.pt", run / "latest.pt")

    index = index_artefacts(run)
    json.dumps(index)  # JSON-able
    files = index["files"]
    assert sorted(files) == ["a.npy", "b.npz", "blob.bin", "ckpt.pt", "empty", "latest.pt", "legacy.pt", "log.txt",
                             "m.json", "partial.pt.tmp", "sub/w.safetensors"]
    fmt = {rel: e["format"] for rel, e in files.items()}
    assert fmt == {"a.npy": "npy", "b.npz": "npz", "blob.bin": "unknown", "ckpt.pt": "torch", "empty": "empty",
                   "latest.pt": "link", "legacy.pt": "torch", "log.txt": "text", "m.json": "json",
                   "partial.pt.tmp": "torch", "sub/w.safetensors": "safetensors"}
    w = files["ckpt.pt"]["tensors"]["model/w"]
    assert (w["dtype"], w["shape"], w["bytes"]) == ("float32", [2, 3], 24)
    assert w["xxh3_128"] == xxhash.xxh3_128_hexdigest(torch.arange(6, dtype=torch.float32).numpy().tobytes())
    assert w["stats"] == {"min": 0.0, "max": 5.0, "mean": 2.5}
    assert sorted(files["ckpt.pt"]["tensors"]) == ["arr", "model/w"]  # scalars and hyperparameters: not tensors
    assert files["ckpt.pt"]["tensors"]["arr"]["dtype"] == "int32"
    assert files["sub/w.safetensors"]["tensors"]["x"]["dtype"] == "bfloat16"
    assert files["a.npy"]["tensors"][""]["shape"] == [4] and list(files["legacy.pt"]["tensors"]) == ["w"]
    assert sorted(files["b.npz"]["tensors"]) == ["p", "q"]
    assert "tensors" not in files["m.json"] and "not judged" in files["m.json"]["why"]
    assert "not recognised" in files["blob.bin"]["why"]


def test_a_differing_export_is_a_divergence_with_values_when_the_folders_exist(tmp_path):
    base = _run(tmp_path / "base")
    trial = _run(tmp_path / "trial", ema_eps=1e-3, log="loss 2.0\n", metrics=3.5)
    os.remove(os.path.join(trial, "train.log"))
    with open(os.path.join(base, "only_base.npy"), "wb") as f:
        np.save(f, np.ones(1))
    with open(os.path.join(trial, "only_trial.npy"), "wb") as f:
        np.save(f, np.ones(1))
    bi, ti = index_artefacts(base), index_artefacts(trial)

    offline = compare_artefacts(bi, ti)  # the baseline's folder is gone: digests and stats only
    assert not offline.ok
    (d,) = offline.divergences
    assert (d.where, d.step, d.attempt, d.rank, d.fields) == ("artefact", None, None, 0, ["artefact:ema.pt"])
    assert [t.name for t in d.tensors] == ["0.weight"]  # the bias is equal
    assert d.tensors[0].note.startswith("digest differs") and "mean" in d.tensors[0].note
    assert d.tensors[0].max_abs_diff is None and "ema.pt" in d.note
    assert offline.only_baseline == ["only_base.npy", "train.log"] and offline.only_trial == ["only_trial.npy"]
    assert [(x.path, x.differs) for x in offline.listed] == [("metrics.json", True)]  # JSON: never judged
    assert offline.judged["files"] == 2 and offline.judged["tensors"] == 5

    online = compare_artefacts(bi, ti, base_dir=base, trial_dir=trial)
    (d,) = online.divergences
    w = d.tensors[0]
    assert (w.n_diff, w.dtype, w.shape) == (12, "float32", [4, 3]) and 0.9e-3 < w.max_abs_diff < 1.1e-3
    json.dumps(online.to_json())

    assert compare_artefacts(bi, index_artefacts(_run(tmp_path / "same"))).ok


def test_rng_state_inside_artefacts_is_not_training_state(tmp_path):
    def write(folder, rng_seed, gan_eps):
        folder.mkdir()
        torch.manual_seed(rng_seed)
        state = {"rng": torch.get_rng_state(), "cuda_like": torch.tensor(list(range(16)), dtype=torch.uint8) + rng_seed,
                 "np": {"state": np.random.RandomState(rng_seed).get_state()[1]}}
        torch.save(state, folder / "rank2_state.pt")
        torch.save({"generator": {"w": torch.ones(2) + gan_eps}}, folder / "gan.pt")  # GAN weights: training state
        return index_artefacts(folder)

    report = compare_artefacts(write(tmp_path / "a", 0, 0.0), write(tmp_path / "b", 1, 0.5))
    by_field = {tuple(d.fields): d for d in report.divergences}
    assert set(by_field) == {("rng:artefact",), ("artefact:gan.pt",)}
    rng = by_field[("rng:artefact",)]
    assert rng.rank == 2 and sorted(t.name for t in rng.tensors) == ["cuda_like", "np/state", "rng"]
    assert [t.name for t in by_field[("artefact:gan.pt",)].tensors] == ["generator/w"]
    # by shape alone: a torch generator state under a neutral name
    assert is_rng_tensor("x.pt", "blob", {"dtype": "uint8", "shape": [5056]})
    assert not is_rng_tensor("x.pt", "seed_weights", {"dtype": "float32", "shape": [5056]})
    assert [rank_of(p) for p in ("ckpt/step8/rank1.pt", "rank3/state.safetensors", "random_states_2.pkl",
                                 "zero_pp_rank_1_mp_rank_00_optim_states.pt", "ema.pt")] == [1, 3, 2, 1, 0]


def test_what_differs_between_two_uninterrupted_runs_is_not_judged(tmp_path):
    def write(folder, stamp, w_eps, extra=False):
        folder.mkdir()
        torch.save({"w": torch.ones(3) + w_eps, "stamp": torch.tensor([stamp])}, folder / "out.pt")
        if extra:
            np.save(folder / "sometimes.npy", np.ones(2))
        return index_artefacts(folder)

    a, b = write(tmp_path / "a", 1.0, 0.0), write(tmp_path / "b", 2.0, 0.0, extra=True)
    unstable = unstable_between(a, b)
    assert unstable == {"out.pt::stamp", "sometimes.npy"}
    trial = write(tmp_path / "t", 3.0, 0.25, extra=True)
    report = compare_artefacts(a, trial, unstable=unstable)
    (d,) = report.divergences
    assert [t.name for t in d.tensors] == ["w"]  # the stamp differs too, but also between two baseline runs
    assert [x.path for x in report.listed] == ["out.pt"] and "uninterrupted" in report.listed[0].why
    assert report.judged["unstable"] == 1 and report.only_trial == ["sometimes.npy"]
    assert compare_artefacts(a, write(tmp_path / "t2", 3.0, 0.0), unstable=unstable).ok


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


class _Custom:
    def __init__(self):
        self.scale = torch.ones(2)

    def __setstate__(self, state):
        open("setstate-ran", "w").close()


def test_pickles_are_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"x": _RunsCode(), "w": torch.ones(2)}, run / "evil.pt")
    torch.save({"obj": _Custom(), "w": torch.ones(2)}, run / "custom.pt")
    (run / "plain.pkl").write_bytes(pickle.dumps({"x": _RunsCode()}))
    files = index_artefacts(run)["files"]
    evil = files["evil.pt"]
    assert (evil["format"], evil["detected"]) == ("unknown", "torch") and "without executing code" in evil["why"]
    plain = files["plain.pkl"]  # a plain pickle: not a torch.save archive, not read
    assert plain["format"] == "unknown" and "a plain pickle: not read" in plain["why"]
    custom = files["custom.pt"]  # an unknown class: an inert record of its data, never imported
    assert custom["format"] == "torch" and custom["opaque"] == [f"{__name__}._Custom"]
    assert sorted(custom["tensors"]) == ["obj/state/scale", "w"]
    with pytest.raises(ArtefactError, match="evil.pt"):
        compare_artefact_files(run / "evil.pt", run / "evil.pt")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "setstate-ran").exists()


def test_a_judged_file_the_trial_left_unreadable_is_a_divergence(tmp_path):
    base, trial = tmp_path / "b", tmp_path / "t"
    for folder in (base, trial):
        folder.mkdir()
        torch.save({"w": torch.ones(2)}, folder / "ema.pt")
    (trial / "ema.pt").write_bytes((trial / "ema.pt").read_bytes()[:100])  # torn
    (d,) = compare_artefacts(index_artefacts(base), index_artefacts(trial)).divergences
    assert d.fields == ["artefact:ema.pt"] and "torch in the baseline, unknown in the trial" in d.note


def test_a_dcp_folder_is_one_artefact_listed_not_judged(tmp_path):
    import torch.distributed.checkpoint as dcp

    def write(folder, eps):
        with pytest.warns(UserWarning, match="single process"):
            dcp.save({"model": {"w": torch.ones(3) + eps}}, checkpoint_id=str(folder / "dcp"), no_dist=True)
        return index_artefacts(folder)

    a, b = write(tmp_path / "a", 0.0), write(tmp_path / "b", 0.5)
    entry = a["files"]["dcp"]  # one entry, .metadata and the shards included, never unpickled
    assert list(a["files"]) == ["dcp"] and entry["format"] == "dcp" and ".metadata" in entry["files"]
    report = compare_artefacts(a, b)
    assert report.ok and [(x.path, x.differs) for x in report.listed] == [("dcp", True)]
    assert "torch.distributed.checkpoint" in report.listed[0].why


def test_bad_input_names_what_is_wrong(tmp_path):
    with pytest.raises(ArtefactError, match="no-such-folder"):
        index_artefacts(tmp_path / "no-such-folder")
    with pytest.raises(ArtefactError, match="not an artefact index"):
        compare_artefacts({"files": {}}, index_artefacts(tmp_path))
    (tmp_path / "m.json").write_text("{}")
    with pytest.raises(ArtefactError, match="m.json"):
        compare_artefact_files(tmp_path / "m.json", tmp_path / "m.json")


def test_the_baseline_cache_keeps_the_index_and_the_unstable_set(tmp_path):
    a, b = _run(tmp_path / "a"), _run(tmp_path / "b", metrics=2.0)
    torch.save({"t": torch.tensor([2.0])}, os.path.join(b, "stamp.pt"))
    root = tmp_path / "entry"
    root.mkdir()
    made = baseline_mod.Baseline(root=str(root))
    baseline_mod._store_artefacts(made, str(root), [baseline_mod._index_run(a), baseline_mod._index_run(b)])
    assert made.artefacts == index_artefacts(a) and made.artefacts_unstable == {"stamp.pt"}
    loaded = baseline_mod.Baseline(root=str(root))
    baseline_mod._load_artefacts(loaded)
    assert (loaded.artefacts, loaded.artefacts_unstable, loaded.artefacts_note) == (made.artefacts, {"stamp.pt"}, None)
    old = baseline_mod.Baseline(root=str(tmp_path))  # an entry made before the index existed: not judged, said so
    baseline_mod._load_artefacts(old)
    assert old.artefacts is None and "no artefact index" in old.artefacts_note
    assert baseline_mod.CACHE_FORMAT >= 2
