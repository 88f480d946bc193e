"""The few collectives the checkpointer needs, on a dedicated gloo group.

Save and load agree across ranks (did every rank write its files? is this checkpoint valid on
every rank?) by exchanging small JSON documents as byte tensors: no pickle on the wire either.
A dedicated gloo group keeps this traffic apart from training collectives (so a background save
can use it while training runs) and works whatever the training backend is (NCCL included).
Without torch.distributed initialized, the world is one rank and every call is local.
"""

from __future__ import annotations

import json
from datetime import timedelta

import torch
import torch.distributed as dist


class Comm:
    def __init__(self, timeout_s: float = 1800.0) -> None:
        self._group = None
        self._timeout = timedelta(seconds=timeout_s)

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    @property
    def rank(self) -> int:
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    @property
    def world_size(self) -> int:
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    @property
    def group(self):
        """The dedicated gloo group (None with one process); after `setup()`."""
        return self._group

    def setup(self) -> None:
        """Create the gloo group. Collective: call on every rank from the main thread."""
        if self.distributed and self._group is None:
            self._group = dist.new_group(backend="gloo", timeout=self._timeout)

    def all_gather_json(self, obj) -> list:
        """Every rank contributes one JSON value; every rank gets the list, indexed by rank."""
        if not self.distributed:
            return [obj]
        self.setup()
        data = torch.frombuffer(bytearray(json.dumps(obj).encode()), dtype=torch.uint8)
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world_size)]
        dist.all_gather(sizes, torch.tensor([data.numel()], dtype=torch.int64), group=self._group)
        longest = max(int(s) for s in sizes)
        padded = torch.zeros(longest, dtype=torch.uint8)
        padded[: data.numel()] = data
        out = [torch.empty(longest, dtype=torch.uint8) for _ in range(self.world_size)]
        dist.all_gather(out, padded, group=self._group)
        return [json.loads(bytes(o[: int(s)].numpy())) for o, s in zip(out, sizes)]

    def broadcast_json(self, obj, src: int = 0):
        """Rank `src`'s value, on every rank."""
        return self.all_gather_json(obj if self.rank == src else None)[src]
