"""Smallest distributed job: init the default process group from env://, barrier, all_reduce, exit."""
import os

import torch
import torch.distributed as dist

dist.init_process_group(os.environ.get("HARNESS_BACKEND", "gloo"))
dist.barrier()
t = torch.ones(1) * (dist.get_rank() + 1)
dist.all_reduce(t)
ws = dist.get_world_size()
assert t.item() == ws * (ws + 1) / 2, t
dist.destroy_process_group()
