"""A checkpoint taken in the middle of a gradient-accumulation window loses the gradients accumulated so far.

Source: https://github.com/Nerogar/OneTrainer/pull/1465 ("Stops mid-accumulation-window lose the
in-flight grad-accum state on resume ... the first post-resume update step ... applies
under-accumulated grads"); the same boundary in the HF Trainer:
https://github.com/huggingface/transformers/issues/22143 ("bug in resume and gas>1": the gradients
accumulated before the save are lost).

A DDP job (2 ranks) accumulates 4 micro-batches per optimizer step and counts its progress in
micro-batches: it saves the model, the optimizer, the micro-batch count and the RNG state every 10
micro-batches, which is in the middle of a window (10 = 2 windows + 2). On resume it skips the
micro-batches consumed and finishes the window with the 2 it has left: the optimizer step of that
window sums half the gradients. --fixed saves only at window boundaries (every 12 micro-batches).
"""

import argparse
import os

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--steps", type=int, default=12, help="optimizer steps")
parser.add_argument("--accum", type=int, default=4)
args = parser.parse_args()
save_every = 12 if args.fixed else 10  # micro-batches
micro_batches = args.steps * args.accum

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.use_deterministic_algorithms(True)
torch.manual_seed(0)  # the same initial weights on every rank

gen = torch.Generator().manual_seed(1)
data = TensorDataset(torch.randn(96, 8, generator=gen), torch.randn(96, 1, generator=gen))
sampler = DistributedSampler(data, shuffle=True, seed=0)
loader = DataLoader(data, batch_size=4, sampler=sampler, generator=torch.Generator())
model = torch.nn.parallel.DistributedDataParallel(
    torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Dropout(0.1), torch.nn.Linear(16, 1)))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
torch.manual_seed(100 + rank)  # dropout differs per rank


def save(micro):
    os.makedirs(f"ckpt/micro{micro}", exist_ok=True)
    torch.save({"model": model.module.state_dict(), "optimizer": optimizer.state_dict(), "micro": micro,
                "torch_rng": torch.get_rng_state()}, f"ckpt/micro{micro}/rank{rank}.pt")


def newest():
    done = [int(d[5:]) for d in os.listdir("ckpt")] if os.path.isdir("ckpt") else []
    done = [m for m in done if all(os.path.exists(f"ckpt/micro{m}/rank{r}.pt") for r in range(world))]
    return max(done, default=0)


micro = newest()
if micro:
    state = torch.load(f"ckpt/micro{micro}/rank{rank}.pt", weights_only=False)
    model.module.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])

epoch, pos = divmod(micro, len(loader))
while micro < micro_batches:
    sampler.set_epoch(epoch)
    for i, (x, y) in enumerate(loader):
        if i < pos:
            continue  # consumed before the checkpoint
        loss = torch.nn.functional.mse_loss(model(x), y) / args.accum
        micro += 1
        if micro % args.accum:
            with model.no_sync():  # all-reduce once per window
                loss.backward()
        else:
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        if micro % save_every == 0:
            save(micro)
        if micro == micro_batches:
            break
    epoch, pos = epoch + 1, 0
dist.destroy_process_group()
