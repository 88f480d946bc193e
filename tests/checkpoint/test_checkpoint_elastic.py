"""Elastic resume in the checkpointer (harness/checkpoint/elastic.py): the world-size independent data
order, its position across world sizes, and the refusals (a data order that is not elastic, a strategy
that cannot reshard). The multi-process 2->1, 1->2, 3->2 and 4->2 resumes are in
tests/harness/engine/test_elastic_trials.py."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from harness.checkpoint import Checkpointer, IncompatibleCheckpointError, ProjectConfiguration, ResumableDataLoader
from harness.checkpoint import strategy
from harness.checkpoint.elastic import ElasticResumeWarning, ElasticSampler, elastic_loader, is_elastic
from harness.checkpoint.manifest import seal
from harness.checkpoint.strategy import StrategyInfo

N, G = 100, 12  # 8 global batches per epoch (4 samples dropped)


def _data(n: int = N) -> TensorDataset:
    return TensorDataset(torch.arange(n))


def _global_batches(world: int, epoch: int, seed: int = 3) -> list[list[int]]:
    """The global batches of an epoch as `world` ranks see them: per batch, the ranks' slices in rank order."""
    per_rank = []
    for r in range(world):
        s = ElasticSampler(_data(), G, num_replicas=world, rank=r, seed=seed)
        s.set_epoch(epoch)
        ids = list(s)
        per_rank.append([ids[i:i + G // world] for i in range(0, len(ids), G // world)])
    return [[x for r in range(world) for x in per_rank[r][b]] for b in range(len(per_rank[0]))]


def test_global_order_is_the_same_on_1_2_3_4_ranks_and_changes_with_epoch_and_seed():
    one = _global_batches(1, epoch=0)
    assert len(one) == N // G and all(len(b) == G for b in one)
    assert len({x for b in one for x in b}) == (N // G) * G  # a permutation: no sample twice
    for world in (2, 3, 4):
        assert _global_batches(world, epoch=0) == one
    assert _global_batches(2, epoch=1) != one
    assert _global_batches(2, epoch=0, seed=4) != one


def test_position_resumes_on_another_world_size():
    """2 ranks consume 3 global batches of epoch 1; the state of rank 0 resumes a 1-rank and a 4-rank job, which
    continue with exactly the global batches the 2-rank job had left, and agree on the data position."""
    def loaders(world):
        return [ResumableDataLoader(elastic_loader(_data(), G, seed=3, num_replicas=world, rank=r), seed=r)
                for r in range(world)]

    two = loaders(2)
    for d in two:
        d.set_epoch(1)
        it = iter(d)
        for _ in range(3):
            next(it)
    states = [d.state_dict() for d in two]
    assert states[0]["position"] == states[1]["position"] == 3 and states[0]["batches_per_epoch"] == N // G
    expected = _global_batches(1, epoch=1)[3:]
    for world in (1, 4):
        new = loaders(world)
        for d in new:
            d.load_state_dict(dict(states[0]))
            assert d.epoch == 1 and d.position == 3
        rest = [[b[0].tolist() for b in d] for d in new]  # per rank: its batches' sample ids
        got = [[x for r in range(world) for x in rest[r][b]] for b in range(len(rest[0]))]
        assert got == expected


def test_bad_global_batch_size_and_is_elastic():
    with pytest.raises(ValueError, match="global_batch_size 12 is not a positive multiple of the world size 5"):
        ElasticSampler(_data(), G, num_replicas=5, rank=0)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ElasticSampler(_data(5), G, num_replicas=1, rank=0)
    assert is_elastic(ResumableDataLoader(elastic_loader(_data(), G, num_replicas=2, rank=1)))
    sampler = ElasticSampler(_data(), G, num_replicas=2, rank=0)
    assert not is_elastic(DataLoader(_data(), sampler=sampler, batch_size=3))  # not one slice per batch
    assert not is_elastic(DataLoader(_data(), sampler=DistributedSampler(_data(), 2, 0), batch_size=6))


def _saved(tmp_path, loader) -> tuple[Checkpointer, str]:
    """A one-process checkpoint of a model, AdamW and `loader`, re-sealed as if 2 ranks had saved it."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ckpt = Checkpointer(ProjectConfiguration(str(tmp_path / "p")))
    model, opt, loader = ckpt.prepare(model, opt, loader)
    for batch in loader:
        model(batch[0].float().reshape(-1, 1).expand(-1, 3)).sum().backward()
        opt.step()
        break
    path = ckpt.save_state(str(tmp_path / "ck"))
    with open(os.path.join(path, "manifest.json")) as f:
        doc = json.load(f)
    doc["world_size"] = 2  # only rank0/ exists: a rank that existed reads its own files
    with open(os.path.join(path, "manifest.json"), "w") as f:
        json.dump(seal(doc), f)
    return ckpt, path


def test_a_data_order_that_is_not_elastic_is_refused_on_another_world_size(tmp_path):
    loader = DataLoader(_data(), batch_size=6, sampler=DistributedSampler(_data(), 1, 0, seed=1))
    ckpt, path = _saved(tmp_path, loader)
    with pytest.raises(IncompatibleCheckpointError,
                       match=r"saved by 2 rank\(s\) .* loading on 1 .*data loader 0 is not elastic \(its sampler is a "
                             r"DistributedSampler, whose order depends on the world size\).*elastic_loader.*resume "
                             r"with the same world size \(2\)"):
        ckpt.load_state(path)


def test_an_elastic_checkpoint_loads_on_another_world_size_and_says_what_it_restored(tmp_path):
    ckpt, path = _saved(tmp_path, elastic_loader(_data(), G, seed=1, num_replicas=1, rank=0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ckpt.load_state(path) == path
    msgs = [str(w.message) for w in caught if issubclass(w.category, ElasticResumeWarning)]
    assert len(msgs) == 1 and "saved by 2 rank(s), loaded on 1: rank 0: RNG streams restored from its own saved " \
                               "streams; the streams of saved rank(s) [1] are dropped" in msgs[0]
    assert ckpt._registry.dataloaders[0].position == 1


@pytest.mark.parametrize("stage", [0, 3])
def test_deepspeed_reshards_zero_1_and_2_only_and_says_so_by_name(stage):
    class Engine:  # what DeepSpeedStrategy reads of an engine
        dp_world_size = 1

        def zero_optimization_stage(self):
            return stage

        save_checkpoint = load_checkpoint = None

    st = strategy.DeepSpeedStrategy(Engine())
    saved = StrategyInfo("deepspeed", "deepspeed", (2,), stage, "state")
    with pytest.raises(IncompatibleCheckpointError,
                       match=rf"ck: saved by 2 rank\(s\) \(DeepSpeed ZeRO stage {stage} \(data-parallel size 2\)\), loading "
                             r"on 1 .*the DeepSpeed strategy cannot reshard this.*only for ZeRO stages \(1, 2\).*resume "
                             r"with the same world size \(2\).*ds_to_universal --input_folder ck/deepspeed/state"):
        st.check_compatible("ck", saved, 2, 1)
    st.check_compatible("ck", StrategyInfo("deepspeed", "deepspeed", (1,), stage, "state"), 1, 1)  # same size: fine
    for ok in (1, 2):  # converted to DeepSpeed's universal checkpoint on load (tests/harness/engine/test_elastic_trials.py)
        Engine.zero_optimization_stage = lambda self, s=ok: s
        strategy.DeepSpeedStrategy(Engine()).check_compatible("ck", StrategyInfo("deepspeed", "deepspeed", (2,), ok,
                                                                                 "state"), 2, 1)


SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support", "scripts",
                      "elastic_job.py")


def _launch(pool, tmp_path, mode: str, world: int, tag: str) -> list[dict]:
    from harness.launch import LaunchSpec

    out = tmp_path / f"{tag}-"
    result = pool.launch(LaunchSpec(nproc=world, log_dir=str(tmp_path / f"logs-{tag}"), script=SCRIPT,
                                    args=(mode, str(tmp_path / "ck"), str(out)), timeout_s=120))
    assert result.ok, [(tmp_path / f"logs-{tag}" / f"rank{r}.log").read_text()[-2000:] for r in range(world)]
    return [json.loads((tmp_path / f"{tag}-{r}.json").read_text()) for r in range(world)]


@pytest.mark.slow
@pytest.mark.parametrize("saved,loaded", [(2, 3), (3, 2)])
def test_per_rank_state_on_another_world_size(pool, tmp_path, saved, loaded):
    """Ranks that existed restore their own RNG streams and per-rank objects exactly; a new rank takes rank 0's
    per-rank objects and data position, and re-derives its RNG streams (reproducibly, unlike any saved rank's)."""
    before = _launch(pool, tmp_path, "save", saved, "save")
    saved_draws = {r["rank"]: r["draws"] for r in before}  # drawn right after the save: what a restore continues
    after = _launch(pool, tmp_path, "load", loaded, "load")
    again = _launch(pool, tmp_path, "load", loaded, "again")
    assert {r["position"] for r in after} == {2} and {r["weight"] for r in after} == {before[0]["weight"]}
    for r in after:
        if r["rank"] < saved:
            assert r["draws"] == saved_draws[r["rank"]] and r["per_rank"] == 100 + r["rank"]
            assert "RNG streams restored from its own saved streams" in r["warning"][0]
        else:
            assert r["per_rank"] == 100 and r["draws"] == again[r["rank"]]["draws"]
            assert all(x != y for s in saved_draws.values() for x, y in zip(r["draws"], s))
            assert "re-derived from (step, rank)" in r["warning"][0] and "from saved rank 0" in r["warning"][0]
    if loaded < saved:
        assert f"the streams of saved rank(s) {list(range(loaded, saved))} are dropped" in after[0]["warning"][0]


def test_a_conversion_left_by_a_killed_load_is_removed_before_the_next(tmp_path):
    from harness.checkpoint.strategy import UNIVERSAL_PREFIX, clear_stale_universal

    (tmp_path / f"{UNIVERSAL_PREFIX}abc" / "global_step10").mkdir(parents=True)
    (tmp_path / "checkpoint_0").mkdir()
    (tmp_path / "notes.harness-universal-x").write_text("a file, not ours")
    assert clear_stale_universal(str(tmp_path)) == [str(tmp_path / f"{UNIVERSAL_PREFIX}abc")]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_0", "notes.harness-universal-x"]
