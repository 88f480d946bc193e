"""Only the EMA weights are checkpointed: on resume the raw model is initialised from the EMA.

Source: https://github.com/Megvii-BaseDetection/YOLOX/issues/1318 ("Incorrect resume": with EMA only
the EMA model's weights are saved, so on resume both the model and the EMA model are initialised from
the EMA weights); the same in YOLOv5: https://github.com/ultralytics/yolov5/issues/310.

A DDP job (2 ranks) keeps an EMA of its weights and checkpoints every 4 steps what it would ship: the
EMA as "model", with the optimizer, the step and the RNG state. On resume it loads that "model" into
both the raw model and the EMA, so training continues from weights the uninterrupted run never had.
--fixed saves the raw weights and the EMA separately.
"""

import argparse
import copy
import os

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--steps", type=int, default=20)
parser.add_argument("--save-every", type=int, default=4)
parser.add_argument("--ema-decay", type=float, default=0.9)
args = parser.parse_args()

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.use_deterministic_algorithms(True)
torch.manual_seed(0)  # the same initial weights on every rank

gen = torch.Generator().manual_seed(1)
data = TensorDataset(torch.randn(96, 8, generator=gen), torch.randn(96, 1, generator=gen))
sampler = DistributedSampler(data, shuffle=True, seed=0)
loader = DataLoader(data, batch_size=4, sampler=sampler, generator=torch.Generator())
net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Dropout(0.1), torch.nn.Linear(16, 1))
model = torch.nn.parallel.DistributedDataParallel(net)
ema = copy.deepcopy(net).requires_grad_(False)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
torch.manual_seed(100 + rank)  # dropout differs per rank


@torch.no_grad()
def update_ema():
    for e, p in zip(ema.parameters(), net.parameters()):
        e.mul_(args.ema_decay).add_(p, alpha=1 - args.ema_decay)


def save(step):
    os.makedirs(f"ckpt/step{step}", exist_ok=True)
    state = {"model": ema.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
             "torch_rng": torch.get_rng_state()}
    if args.fixed:
        state["model"], state["ema"] = net.state_dict(), ema.state_dict()
    torch.save(state, f"ckpt/step{step}/rank{rank}.pt")


def newest():
    steps = [int(d[4:]) for d in os.listdir("ckpt")] if os.path.isdir("ckpt") else []
    done = [s for s in steps if all(os.path.exists(f"ckpt/step{s}/rank{r}.pt") for r in range(world))]
    return max(done, default=0)


step = newest()
if step:
    state = torch.load(f"ckpt/step{step}/rank{rank}.pt", weights_only=False)
    net.load_state_dict(state["model"])
    ema.load_state_dict(state.get("ema", state["model"]))
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])

epoch, pos = divmod(step, len(loader))
while step < args.steps:
    sampler.set_epoch(epoch)
    for i, (x, y) in enumerate(loader):
        if i < pos:
            continue  # consumed before the checkpoint
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        update_ema()
        step += 1
        if step % args.save_every == 0:
            save(step)
        if step == args.steps:
            break
    epoch, pos = epoch + 1, 0

if rank == 0:
    os.makedirs("out", exist_ok=True)
    torch.save(ema.state_dict(), "out/ema.pt")
dist.destroy_process_group()
