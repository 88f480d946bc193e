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


# A document up to this size travels in the one collective that also carries its length.
INLINE_BYTES = 8192
_HEADER = 8


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
        """Every rank contributes one JSON value; every rank gets the list, indexed by rank.

        One collective when every document fits `INLINE_BYTES` (the usual case: errors, tokens, file
        lists): each rank sends its length and its bytes in one fixed-size buffer. Only when one does
        not fit do all ranks (they all see the lengths) gather again at the longest length.
        """
        if not self.distributed:
            return [obj]
        self.setup()
        data = json.dumps(obj).encode()
        buf = torch.zeros(_HEADER + INLINE_BYTES, dtype=torch.uint8)
        buf[:_HEADER] = torch.frombuffer(bytearray(len(data).to_bytes(_HEADER, "little")), dtype=torch.uint8)
        if len(data) <= INLINE_BYTES:
            buf[_HEADER:_HEADER + len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        out = [torch.empty_like(buf) for _ in range(self.world_size)]
        dist.all_gather(out, buf, group=self._group)
        sizes = [int.from_bytes(bytes(o[:_HEADER].numpy()), "little") for o in out]
        if max(sizes) <= INLINE_BYTES:
            return [json.loads(bytes(o[_HEADER:_HEADER + n].numpy())) for o, n in zip(out, sizes)]
        longest = max(sizes)
        padded = torch.zeros(longest, dtype=torch.uint8)
        padded[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        out = [torch.empty(longest, dtype=torch.uint8) for _ in range(self.world_size)]
        dist.all_gather(out, padded, group=self._group)
        return [json.loads(bytes(o[:n].numpy())) for o, n in zip(out, sizes)]

    def broadcast_json(self, obj, src: int = 0):
        """Rank `src`'s value, on every rank."""
        return self.all_gather_json(obj if self.rank == src else None)[src]
