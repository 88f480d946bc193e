"""The strategy layer: FSDP2 (DCP sharded / full) and DeepSpeed round trips, cross-strategy rules, bad input.

The multi-rank checks run on 2 gloo ranks of the warm pool (tests/support/scripts/strategy_job.py), many
per process group; every comparison is of raw bytes (support.checkpoint_jobs.state_bytes).
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from harness.checkpoint import (Checkpointer, CorruptCheckpointError, IncompatibleCheckpointError,
                                NotACheckpointError)
from harness.checkpoint import files, strategy
from harness.checkpoint.strategy import StrategyInfo
from harness.launch import LaunchSpec
from support.checkpoint_jobs import make_job, state_bytes, train

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support", "scripts",
                      "strategy_job.py")
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None


def _manifest(path) -> dict:
    with open(os.path.join(path, "manifest.json")) as f:
        return json.load(f)


def _run_job(pool, kind: str, tmp_path, world: int = 2) -> None:
    """Run tests/support/scripts/strategy_job.py KIND on `world` gloo ranks of the warm pool."""
    out = tmp_path / "out"
    out.mkdir()
    result = pool.launch(LaunchSpec(nproc=world, log_dir=str(tmp_path / "logs"), script=SCRIPT, args=(kind, str(out)),
                                    timeout_s=240))
    errors = [(out / f"err{r}").read_text() for r in range(world) if (out / f"err{r}").exists()]
    assert not errors, "\n".join(errors)
    assert not result.timed_out and all(e.returncode == 0 for e in result.exits), [
        (tmp_path / "logs" / f"rank{r}.log").read_text()[-3000:] for r in range(world)]
    assert all((out / f"ok{r}").exists() for r in range(world))


def test_fsdp2_sharded_and_full_round_trips_cross_loads_and_damage(pool, tmp_path):
    """FSDP2 on 2 ranks: sharded (DCP) and full round trips, full -> DDP, DDP -> FSDP2, sharded -> DDP refused,
    a flipped byte in a shard and a missing .metadata caught before DCP reads anything."""
    _run_job(pool, "fsdp", tmp_path)


@pytest.mark.skipif(not HAS_DEEPSPEED, reason="deepspeed is not installed (DS_BUILD_OPS=0 pip install -e '.[test]')")
@pytest.mark.slow  # on a fresh machine DeepSpeed first compiles a CPU op (tens of seconds); CI runs the slow set
def test_deepspeed_round_trip_checksums_and_refusals(pool, tmp_path):
    """ZeRO-2 on 2 ranks: round trip, every DeepSpeed file in the manifest, `latest` inside the checkpoint, a
    flipped byte caught before DeepSpeed unpickles, ZeRO-3 and DDP refused naming both strategies."""
    _run_job(pool, "deepspeed", tmp_path)


# -- one process: bad input, detection, manifest ------------------------------------------------------


def test_raw_deepspeed_folders_are_named_with_what_to_do(tmp_path):
    job = make_job(tmp_path / "p")
    raw = tmp_path / "raw"
    (raw / "global_step5").mkdir(parents=True)
    (raw / "global_step5" / "mp_rank_00_model_states.pt").write_bytes(b"PK\x03\x04")
    with pytest.raises(NotACheckpointError, match=r"without a `latest` file \(tag folders: global_step5\).*tag="):
        job[0].load_state(raw)
    (raw / "latest").write_text("global_step9")
    with pytest.raises(NotACheckpointError, match=r"`latest` names tag 'global_step9', but .*global_step9 does not exist"):
        job[0].load_state(raw)
    (raw / "latest").write_text("global_step5")
    with pytest.raises(NotACheckpointError, match=r"raw DeepSpeed checkpoint \(tag 'global_step5'\).*pickle"):
        job[0].load_state(raw)
    with pytest.raises(NotACheckpointError, match="raw DeepSpeed tag folder"):
        job[0].load_state(raw / "global_step5")


def test_raw_dcp_folder_without_metadata_is_named(tmp_path):
    job = make_job(tmp_path / "p")
    (tmp_path / "dcp").mkdir()
    (tmp_path / "dcp" / "__0_0.distcp").write_bytes(b"\0" * 16)
    with pytest.raises(NotACheckpointError, match=r"DCP\) folder without .metadata.*did not finish"):
        job[0].load_state(tmp_path / "dcp")
    (tmp_path / "dcp" / ".metadata").write_bytes(b"\x80\x04.")
    with pytest.raises(NotACheckpointError, match=r"raw torch.distributed.checkpoint \(DCP\) folder.*pickle"):
        job[0].load_state(tmp_path / "dcp")


def test_dcp_checkpoint_whose_manifest_lacks_metadata_is_refused(tmp_path):
    st = strategy.FSDPStrategy([], state_dict="sharded")
    saved = StrategyInfo("fsdp", "dcp", (2,))
    rec = files.FileRecord("dcp/__0_0.distcp", 1, "0" * 32)
    with pytest.raises(CorruptCheckpointError, match=r"DCP folder dcp/ has no .metadata in the manifest"):
        st.verify_native(str(tmp_path), [rec], 0, 2, saved, [])


def test_mesh_and_world_size_mismatch_name_both_meshes(tmp_path):
    st = strategy.FSDPStrategy([], state_dict="sharded")
    object.__setattr__(st, "mesh", (3,))
    st.check_compatible("ck", StrategyInfo("fsdp", "dcp", (2,)), 2, 3)  # 1-D meshes: DCP reshards (elastic.py)
    with pytest.raises(IncompatibleCheckpointError, match=r"mesh of shape \(2, 2\), loading on \(4,\)"):
        object.__setattr__(st, "mesh", (4,))
        st.check_compatible("ck", StrategyInfo("fsdp", "dcp", (2, 2)), 4, 4)
    rep = strategy.ReplicatedStrategy()
    with pytest.raises(IncompatibleCheckpointError, match="strategy 'deepspeed'.*same ZeRO stage"):
        rep.check_compatible("ck", StrategyInfo("deepspeed", "deepspeed", (2,), 1, "state"), 2, 2)
    rep.check_compatible("ck", StrategyInfo("fsdp", "replicated", (2,)), 2, 2)  # a full state dict: fine


def test_replicated_detection_manifest_and_old_versions(tmp_path):
    job = make_job(tmp_path)
    assert isinstance(job[0].strategy, strategy.ReplicatedStrategy)
    train(job, 2)
    path = job[0].save_state()
    doc = _manifest(path)
    assert doc["version"] == 3 and doc["backend"] == "replicated"
    assert doc["strategy"] == {"name": "replicated", "layout": "replicated", "mesh": None, "zero_stage": None,
                               "tag": None}
    # a version-2 manifest (no strategy field) is read as replicated
    from harness.checkpoint.manifest import seal

    del doc["strategy"]
    doc["version"] = 2
    with open(os.path.join(path, "manifest.json"), "w") as f:
        json.dump(seal(doc), f)
    state = state_bytes({"m": job[1].state_dict(), "o": job[2].state_dict()})
    train(job, 3)
    assert job[0].load_state(path) == path
    assert state_bytes({"m": job[1].state_dict(), "o": job[2].state_dict()}) == state
    with pytest.raises(ValueError, match="fsdp_state_dict must be one of"):
        Checkpointer(fsdp_state_dict="half")
