"""The checkpointer's agreements across 3 gloo ranks: JSON documents of any size arrive intact, in
one collective when they fit the inline buffer, and a save or a load needs only a few agreements."""

from __future__ import annotations

import json
import os
import traceback

import torch
import torch.distributed as dist

from support.spawn import run_ranks

WORLD = 3


def _counting(calls: list):
    real = dist.all_gather

    def all_gather(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    return all_gather


def _worker(rank, store_path, project_dir, result_dir):
    try:
        dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=WORLD)
        from harness.checkpoint import Checkpointer, CheckpointSaveError, ProjectConfiguration
        from harness.checkpoint import comm as comm_module

        comm = comm_module.Comm()
        comm.setup()
        calls: list = []
        dist.all_gather = _counting(calls)
        limit = comm_module.INLINE_BYTES
        cases = {
            "small": {"rank": rank, "text": "é" * rank},
            "one rank over the inline buffer": "x" * (limit + 10) if rank == 1 else rank,
            "exactly the inline buffer": "y" * (limit - 2),  # json adds the two quotes
            "all over": ["z" * (limit * 2 + rank)],
            "null": None,
        }
        seen = {}
        for name, doc in cases.items():
            before = len(calls)
            got = comm.all_gather_json(doc)
            seen[name] = (len(calls) - before, got)
        with open(os.path.join(result_dir, f"comm{rank}.json"), "w") as f:
            json.dump(seen, f)

        model = torch.nn.Linear(3, 2)
        ckpt = Checkpointer(ProjectConfiguration(project_dir, automatic_checkpoint_naming=True))
        ckpt.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
        counts = {}
        for name, call in (("save", ckpt.save_state), ("load", ckpt.load_state)):
            before = len(calls)
            call()
            counts[name] = len(calls) - before
        # Ranks that disagree on how the folder is named fail together, with a message, instead of hanging.
        try:
            ckpt.save_state(os.path.join(project_dir, "explicit") if rank == 2 else None)
        except CheckpointSaveError as e:
            counts["mixed"] = str(e)
        with open(os.path.join(result_dir, f"counts{rank}.json"), "w") as f:
            json.dump(counts, f)
        dist.destroy_process_group()
    except BaseException:
        with open(os.path.join(result_dir, f"err{rank}"), "w") as f:
            f.write(traceback.format_exc())
        raise


def test_agreements_carry_any_document_in_as_few_collectives_as_fit(tmp_path):
    run_ranks(_worker, WORLD, lambda r: (r, str(tmp_path / "store"), str(tmp_path / "project"), str(tmp_path)),
              tmp_path)
    from harness.checkpoint.comm import INLINE_BYTES
    for rank in range(WORLD):
        seen = json.load(open(tmp_path / f"comm{rank}.json"))
        assert seen["small"] == [1, [{"rank": r, "text": "é" * r} for r in range(WORLD)]]
        assert seen["one rank over the inline buffer"] == [2, [0, "x" * (INLINE_BYTES + 10), 2]]
        assert seen["exactly the inline buffer"] == [1, ["y" * (INLINE_BYTES - 2)] * WORLD]
        assert seen["all over"] == [2, [["z" * (INLINE_BYTES * 2 + r)] for r in range(WORLD)]]
        assert seen["null"] == [1, [None] * WORLD]
        counts = json.load(open(tmp_path / f"counts{rank}.json"))
        # save: folder name + index, staging token, staging seen, files written, commit; load: device and
        # checkpoints found, then each rank's verdict on the candidate.
        assert counts["save"] == 5, counts
        assert counts["load"] == 2, counts
        assert "ranks [2] passed save_state(output_dir)" in counts["mixed"], counts
    assert not os.path.exists(tmp_path / "project" / "explicit")
