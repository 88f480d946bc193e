"""harness inspect / harness diff on checkpoints that real backends wrote, and the CLI as users run it.

Multi-rank checkpoints (FSDP2 and DeepSpeed ZeRO-2, native and raw) come from
tests/support/scripts/contents_job.py on 2 and 3 gloo ranks of the warm pool; Accelerate's from
Accelerator(cpu=True). All slow: they launch processes or import DeepSpeed / Accelerate.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from harness.contents import diff_contents, read_checkpoint
from harness.contents.readers import ContentsError
from harness.launch import LaunchSpec
from support import REPO, SCRIPTS
from support.checkpoint_jobs import Counter, make_job, train

pytestmark = pytest.mark.slow
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
PARAMS = 5 * 7 + 7 + 7 * 3 + 3  # the job's model


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def _flip_byte(path, offset: int) -> None:
    raw = bytearray(open(path, "rb").read())
    raw[offset] ^= 0x01
    open(path, "wb").write(bytes(raw))


@pytest.fixture(scope="module", params=[2, 3], ids=["2ranks", "3ranks"])
def written(request, pool, tmp_path_factory):
    """(world, folder) with native_fsdp, native_deepspeed, raw_dcp and raw_deepspeed written by `world` ranks."""
    if not HAS_DEEPSPEED:
        pytest.skip("deepspeed is not installed (DS_BUILD_OPS=0 pip install -e '.[test]')")
    world = request.param
    tmp = tmp_path_factory.mktemp(f"contents{world}")
    out = tmp / "out"
    out.mkdir()
    result = pool.launch(LaunchSpec(nproc=world, log_dir=str(tmp / "logs"), script=os.path.join(SCRIPTS, "contents_job.py"),
                                    args=(str(out),), env={"DS_ACCELERATOR": "cpu"}, timeout_s=600))
    errors = [(out / f"err{r}").read_text() for r in range(world) if (out / f"err{r}").exists()]
    assert not errors, "\n".join(errors)
    assert not result.timed_out and all((out / f"ok{r}").exists() for r in range(world)), [
        (tmp / "logs" / f"rank{r}.log").read_text()[-3000:] for r in range(world)]
    return world, out


def test_fsdp_native_and_raw_dcp_hold_the_same_global_tensors(written):
    world, out = written
    native, raw = read_checkpoint(str(out / "native_fsdp")), read_checkpoint(str(out / "raw_dcp"))
    assert native.format == "native" and native.ok and all(f.status == "ok" for f in native.files)
    assert raw.format == "dcp" and raw.ok
    assert {f"rank{r}" for r in range(world)} <= set(native.groups())
    assert {f.path for f in native.files} >= {f"dcp/__{r}_0.distcp" for r in range(world)} | {"dcp/.metadata"}
    model = {k[1]: e for k, e in raw.tensors.items() if k[1].startswith("model.")}
    assert {n: e.shape for n, e in model.items()} == {"model.0.weight": (7, 5), "model.0.bias": (7,),
                                                      "model.2.weight": (3, 7), "model.2.bias": (3,)}
    for name, e in model.items():  # the same model state, assembled from `world` shards on both sides
        assert native.tensors[("shared", "dcp/model_0." + name[len("model."):])].digest() == e.digest()
    assert raw.trees[("shared", "items")]["extra.step"] == 3

    # DCP's own loader, in one process, reads the very same bytes
    import torch.distributed.checkpoint as dcp

    state = {"model": {n[len("model."):]: torch.empty(e.shape) for n, e in model.items()}}
    with pytest.warns(UserWarning):
        dcp.load(state, checkpoint_id=str(out / "raw_dcp"), no_dist=True)
    for n, t in state["model"].items():
        assert torch.equal(t.view(torch.int32), model["model." + n].tensor.view(torch.int32))


def test_deepspeed_native_and_raw_tags_per_rank_without_importing_deepspeed(written):
    world, out = written
    native, raw = read_checkpoint(str(out / "native_deepspeed")), read_checkpoint(str(out / "raw_deepspeed"))
    assert native.ok and raw.ok and raw.format == "deepspeed" and raw.summary["tag"] == "step3"
    assert raw.summary["dp_world_size"] == world and raw.trees[("shared", "mp_rank_00_model_states")]["epoch"] == 1
    for r in range(world):  # each rank's ZeRO-2 partition of the fp32 master weights, in its own group
        assert ("rank%d" % r, "mp_rank_00_optim_states/optimizer_state_dict/single_partition_of_fp32_groups/#0") in raw.tensors
    parts = [raw.tensors[(f"rank{r}", "mp_rank_00_optim_states/optimizer_state_dict/single_partition_of_fp32_groups/#0")]
             for r in range(world)]
    assert sum(p.tensor.numel() for p in parts) >= PARAMS
    for key, e in raw.tensors.items():
        if key[1].startswith("mp_rank_00_model_states/module/"):
            assert native.tensors[(key[0], "deepspeed/" + key[1])].digest() == e.digest()
    zero = raw.trees[("rank0", "mp_rank_00_optim_states")]["optimizer_state_dict"]["zero_stage"]
    assert zero == {"__object__": "deepspeed.runtime.zero.config.ZeroStageEnum", "args": [2]}
    code = ("import sys; from harness.contents import read_checkpoint; "
            f"c = read_checkpoint({str(out / 'raw_deepspeed')!r}); assert c.ok; "
            "assert not [m for m in sys.modules if m.split('.')[0] == 'deepspeed'], 'deepspeed was imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_cli_on_backend_checkpoints_damage_and_bad_input(written, tmp_path):
    world, out = written
    copy = tmp_path / "copy"
    shutil.copytree(out / "native_deepspeed", copy)
    same = _cli("diff", str(out / "native_deepspeed"), str(copy))
    assert same.returncode == 0 and "identical" in same.stdout, same.stderr

    victim = f"deepspeed/state/zero_pp_rank_{world - 1}_mp_rank_00_optim_states.pt"
    _flip_byte(copy / victim, 200)
    bad = _cli("inspect", str(copy))
    assert bad.returncode == 1 and f"{victim}: mismatch: checksum mismatch" in bad.stdout
    refused = _cli("diff", str(out / "native_deepspeed"), str(copy), "--json")
    assert refused.returncode == 2 and victim in json.loads(refused.stdout)["error"]

    doc = json.loads(_cli("inspect", str(out / "raw_dcp"), "--json").stdout)
    assert doc["format"] == "dcp" and doc["ok"]
    assert {t["name"] for t in doc["groups"]["shared"]["tensors"]} >= {"model.0.weight", "optim.state.0.weight.exp_avg"}

    # a raw DeepSpeed folder: a truncated file is named; several tags without `latest` ask for one
    raw = tmp_path / "raw"
    shutil.copytree(out / "raw_deepspeed", raw)
    with open(raw / "step3" / "mp_rank_00_model_states.pt", "r+b") as f:
        f.truncate(100)
    c = read_checkpoint(str(raw))
    assert [(f.path, f.status) for f in c.failed_files] == [("step3/mp_rank_00_model_states.pt", "unreadable")]
    os.remove(raw / "latest")
    shutil.copytree(raw / "step3", raw / "step4")
    with pytest.raises(ContentsError, match=r"without a `latest` file and with tag folders step3, step4; pass one tag"):
        read_checkpoint(str(raw))
    assert read_checkpoint(str(raw / "step4")).summary["tag"] == "step4"


def test_accelerate_save_state_inspect_and_diff(tmp_path):
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    model, opt, sched = acc.prepare(model, opt, sched)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    sched.step()
    acc.save_state(str(tmp_path / "a"))
    model.weight.data.view(-1).view(torch.int32)[3] ^= 1
    acc.save_state(str(tmp_path / "b"))
    a, b = read_checkpoint(str(tmp_path / "a")), read_checkpoint(str(tmp_path / "b"))
    assert a.format == "accelerate" and a.ok and a.summary["world_size"] == 1
    assert a.tensors[("shared", "model/weight")].shape == (3, 4)
    assert ("shared", "optimizer/state/#0/exp_avg") in a.tensors
    assert a.trees[("shared", "scheduler")]["last_epoch"] == 1
    mt = a.tensors[("rank0", "random_states/numpy_random_seed/#1")]  # numpy's MT19937 key, read as data
    assert (mt.dtype, mt.shape) == ("uint32", (624,))
    d = diff_contents(a, b)
    assert [(t.group, t.name, t.n_diff, t.max_ulp) for t in d.tensors] == [("shared", "model/weight", 1, 1)]
    assert not d.only_a and not d.only_b and not d.trees
    cli = _cli("diff", str(tmp_path / "a"), str(tmp_path / "b"))
    assert cli.returncode == 1 and "first differing tensor: shared: model/weight" in cli.stdout


def test_cli_inspect_and_diff_native_as_users_run_them(tmp_path):
    job = make_job(tmp_path / "p", automatic_checkpoint_naming=False)
    train(job, 2)
    a = job[0].save_state(str(tmp_path / "a"))
    job[1][2].bias.data.view(torch.int32)[0] ^= 1 << 3  # 8 ULP
    b = job[0].save_state(str(tmp_path / "b"))

    shown = _cli("inspect", a)
    assert shown.returncode == 0, shown.stderr
    assert "verified against the manifest" in shown.stdout and "FAILED" not in shown.stdout
    assert "models/0/0.weight" in shown.stdout and "float32" in shown.stdout
    doc = json.loads(_cli("inspect", a, "--json").stdout)
    assert doc["ok"] and {"shared", "rank0"} <= set(doc["groups"])

    diff = _cli("diff", a, b)
    assert diff.returncode == 1
    assert "first differing tensor: shared: models/0/2.bias" in diff.stdout and "1/1 differ" in diff.stdout
    first = json.loads(_cli("diff", a, b, "--json").stdout)["first"]
    assert (first["name"], first["max_ulp"], first["n_diff"]) == ("models/0/2.bias", 8, 1)
    assert _cli("diff", a, a).returncode == 0
    other = make_job(tmp_path / "q", automatic_checkpoint_naming=False)  # one more custom object: a tensor more
    train(other, 2)
    other[0].register_for_checkpointing(Counter())
    sets = _cli("diff", a, other[0].save_state(str(tmp_path / "c")))
    assert sets.returncode == 1 and "tensors only in B (missing in A): 1\n  shared: custom/1/buffer" in sets.stdout

    _flip_byte(os.path.join(b, "shared", "model_0.safetensors"), -1)
    bad = _cli("inspect", b)
    assert bad.returncode == 1 and "shared/model_0.safetensors: mismatch" in bad.stdout
    missing = _cli("diff", a, str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
