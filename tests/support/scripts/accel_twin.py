"""One training script, two checkpointers: HF Accelerate's `Accelerator` or our `Checkpointer`.

Run by tests/checkpoint/test_checkpoint_vs_accelerate.py (one process, or several ranks under gloo):

    accel_twin.py --backend accelerate|harness --data sampler|shuffle --phase full|resume
                  [--skip-first-batches] [--pin-bucket-layout] [--load-accelerate FOLDER] PROJECT_DIR OUT_DIR

The script is written the way Accelerate's documentation writes a resumable loop: prepare, register a
step counter, `save_state()` with automatic naming, `load_state()` on resume, then `set_epoch` per epoch
(and, for Accelerate, `skip_first_batches` on the resumed epoch with --skip-first-batches).
The backends differ in the line that builds `accelerator` and, with several processes only, in the block
that does what Accelerate's prepare does and the Checkpointer does not (process group, DDP, data sharding).

--phase full      train 3 epochs uninterrupted; save mid-epoch 1 (step SAVE_AT) and dump the state there
--phase resume    a new process: load_state() the newest checkpoint, dump what it restored, train to the end,
                  then save_state() again (does the next automatic name follow the loaded one?)
--load-accelerate FOLDER   (ours, resume) load Accelerate's checkpoint FOLDER (`allow_unsafe_pickle=True`),
                  dump what it restored, and stop
--pin-bucket-layout   (Accelerate only) pin the DDP model's bucket layout to parameter order from the first step
                  (harness.checkpoint.pin_bucket_layout, the Checkpointer's deterministic_reduction="fixed_layout")
--skip-first-batches   (Accelerate only) the documented mid-epoch recipe: `accelerator.skip_first_batches`
                  on the resumed epoch. The Checkpointer's loader resumes mid-epoch by itself and has none.
--data sampler    the data order is a function of (seed, epoch) under both backends: a DistributedSampler,
                  batches sharded as Accelerate shards them, a DataLoader generator (so that iterating never
                  draws from the global torch RNG): both backends then train identically up to the save
--data shuffle    `DataLoader(shuffle=True)`, as most scripts have it (a DistributedSampler for the
                  Checkpointer under several ranks): the order depends on how each backend seeds it

Each rank writes OUT_DIR/{saved,restored,final-PHASE}-rank{r}.{safetensors,json} (the model, optimizer, scheduler,
python/numpy/torch RNG states and the step counter, flattened: tensors to safetensors, the rest to JSON
with floats as exact hex), OUT_DIR/losses-PHASE-rank{r}.json (every loss, a fingerprint of every batch,
where the resumed run's next automatic save went), and OUT_DIR/ok{r}, or OUT_DIR/err{r} with the traceback.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import traceback

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import save_file

EPOCHS = 3
BATCH = 4
SAMPLES = 48  # 12 batches per epoch: divisible by 1, 2 and 3 ranks, so Accelerate pads no batch


class TrainState:
    """The step counter, registered with the checkpointer (Accelerate needs state_dict/load_state_dict)."""

    def __init__(self) -> None:
        self.step = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])


class BatchShardSampler(torch.utils.data.Sampler):
    """The samples of every `world`-th batch of `sampler`, from batch `rank` on: the batches that
    Accelerate's prepare gives this rank (BatchSamplerShard), so that both backends see the same data."""

    def __init__(self, sampler, batch_size: int, rank: int, world: int) -> None:
        self.sampler, self.batch_size, self.rank, self.world = sampler, batch_size, rank, world

    def __iter__(self):
        indices = list(self.sampler)
        for b in range(self.rank, len(indices) // self.batch_size, self.world):
            yield from indices[b * self.batch_size:(b + 1) * self.batch_size]

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size // self.world * self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)


def flatten(obj, path: str, tensors: dict, values: dict) -> None:
    """Tensors (and numpy arrays) by path into `tensors`, everything else into `values` (floats as hex)."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous().clone()
    elif isinstance(obj, np.ndarray):
        tensors[path] = torch.from_numpy(obj.copy())
    elif isinstance(obj, dict):
        for k, v in obj.items():
            flatten(v, f"{path}/{k}", tensors, values)
    elif isinstance(obj, (list, tuple)):
        values[path] = f"{type(obj).__name__}[{len(obj)}]"
        for i, v in enumerate(obj):
            flatten(v, f"{path}/{i}", tensors, values)
    elif isinstance(obj, float):
        values[path] = obj.hex()
    else:
        values[path] = obj if obj is None or isinstance(obj, (bool, int, str)) else repr(obj)


def dump(out_dir: str, tag: str, rank: int, model, optimizer, scheduler, train_state) -> None:
    state = {"model": getattr(model, "module", model).state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "train_state": train_state.state_dict(),
             "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}}
    tensors: dict = {}
    values: dict = {}
    flatten(state, "", tensors, values)
    save_file(tensors, os.path.join(out_dir, f"{tag}-rank{rank}.safetensors"))
    with open(os.path.join(out_dir, f"{tag}-rank{rank}.json"), "w") as f:
        json.dump(values, f, indent=0, sort_keys=True)


def main(args) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))

    # -- the one line that differs ------------------------------------------------------------------
    if args.backend == "accelerate":
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration
        accelerator = Accelerator(cpu=True, step_scheduler_with_optimizer=False, project_dir=args.project_dir, project_config=ProjectConfiguration(automatic_checkpoint_naming=True))
    else:
        from harness.checkpoint import Checkpointer, ProjectConfiguration
        accelerator = Checkpointer(project_dir=args.project_dir, project_config=ProjectConfiguration(automatic_checkpoint_naming=True))

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 1))
    data_gen = torch.Generator().manual_seed(1)
    x = torch.randn(SAMPLES, 4, generator=data_gen)
    dataset = torch.utils.data.TensorDataset(x, x[:, :1] * 2 - x[:, 1:2])
    # Ranks draw different dropout masks and noise (DDP keeps the weights equal).
    torch.manual_seed(100 + rank), np.random.seed(100 + rank), random.seed(100 + rank)

    if args.data == "sampler":
        sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=7)
        loader_kwargs = {"sampler": sampler, "generator": torch.Generator().manual_seed(3)}
    else:
        loader_kwargs = {"shuffle": True}

    # -- what Accelerate's prepare does under several processes and the Checkpointer leaves to you -----
    if args.backend == "harness" and world > 1:
        dist.init_process_group("gloo")
        model = torch.nn.parallel.DistributedDataParallel(model)
        if args.data == "sampler":
            loader_kwargs["sampler"] = BatchShardSampler(loader_kwargs["sampler"], BATCH, rank, world)
        else:
            loader_kwargs = {"sampler": torch.utils.data.DistributedSampler(dataset, shuffle=True, seed=7)}

    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, **loader_kwargs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-2, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.25, total_iters=10)

    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    if args.pin_bucket_layout:  # the Checkpointer's fixed_layout mode; here for Accelerate's DDP model
        from harness.checkpoint import pin_bucket_layout
        assert pin_bucket_layout(model), "the DDP bucket layout was not pinned"
    train_state = TrainState()
    accelerator.register_for_checkpointing(train_state)
    save_at = len(loader) + len(loader) // 2 + 1  # mid-epoch 1

    if args.phase == "resume":
        if args.load_accelerate:  # an Accelerate checkpoint, converted on the fly (it holds pickles: opt-in)
            accelerator.load_state(args.load_accelerate, allow_unsafe_pickle=True)
            dump(args.out_dir, "restored", rank, model, optimizer, scheduler, train_state)
            return  # Accelerate saves no data position: what follows would not be the same training
        accelerator.load_state(map_location="cpu")
        dump(args.out_dir, "restored", rank, model, optimizer, scheduler, train_state)

    losses, seen = [], []  # seen: a fingerprint of each batch's inputs
    start_epoch, resume_batch = divmod(train_state.step, len(loader))
    for epoch in range(start_epoch, EPOCHS):
        loader.set_epoch(epoch)
        batches = loader
        if args.skip_first_batches and epoch == start_epoch and resume_batch:
            batches = accelerator.skip_first_batches(loader, resume_batch)
        model.train()
        for xb, yb in batches:
            noise = torch.from_numpy(np.random.standard_normal(yb.shape).astype("float32")) * 0.01
            noise = noise + random.random() * 1e-3
            loss = torch.nn.functional.mse_loss(model(xb) + noise, yb)
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            train_state.step += 1
            losses.append(loss.item().hex())
            seen.append(hashlib.sha1(xb.numpy().tobytes()).hexdigest()[:12])
            if args.phase == "full" and train_state.step == save_at:
                accelerator.save_state(safe_serialization=True)
                dump(args.out_dir, "saved", rank, model, optimizer, scheduler, train_state)

    dump(args.out_dir, f"final-{args.phase}", rank, model, optimizer, scheduler, train_state)
    next_save = None
    if args.phase == "resume":  # where the resumed run's next automatic save goes
        try:
            next_save = os.path.relpath(accelerator.save_state(safe_serialization=True), args.project_dir)
        except ValueError as e:
            next_save = f"ValueError: {e}"
    with open(os.path.join(args.out_dir, f"losses-{args.phase}-rank{rank}.json"), "w") as f:
        json.dump({"losses": losses, "batches": seen, "batches_per_epoch": len(loader), "save_at": save_at,
                   "next_save": next_save, "world_size": dist.get_world_size() if dist.is_initialized() else 1,
                   "model": type(model).__name__, "loader": type(loader).__name__}, f)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["accelerate", "harness"], required=True)
    parser.add_argument("--data", choices=["sampler", "shuffle"], default="sampler")
    parser.add_argument("--phase", choices=["full", "resume"], required=True)
    parser.add_argument("--skip-first-batches", action="store_true")
    parser.add_argument("--pin-bucket-layout", action="store_true")
    parser.add_argument("--load-accelerate", metavar="FOLDER", help="(ours) resume from this Accelerate checkpoint")
    parser.add_argument("project_dir")
    parser.add_argument("out_dir")
    args = parser.parse_args()
    if args.skip_first_batches and args.backend != "accelerate":
        parser.error("--skip-first-batches is Accelerate's recipe; the Checkpointer's loader resumes by itself")
    if args.load_accelerate and (args.backend != "harness" or args.phase != "resume"):
        parser.error("--load-accelerate is for --backend harness --phase resume")
    if args.pin_bucket_layout and args.backend != "accelerate":
        parser.error("--pin-bucket-layout is for Accelerate's DDP model; the Checkpointer restores its own layout")
    if os.environ.get("WORLD_SIZE") == "1":
        # One rank runs as plain `python accel_twin.py` would: a launcher sets torchrun's variables even for one
        # process, and Accelerate then starts a process group and wraps the model in DDP.
        for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            os.environ.pop(var, None)
    rank = int(os.environ.get("RANK", "0"))
    try:
        main(args)
        open(os.path.join(args.out_dir, f"ok{rank}"), "w").close()
    except BaseException:
        with open(os.path.join(args.out_dir, f"err{rank}"), "w") as f:
            f.write(traceback.format_exc())
        raise
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
