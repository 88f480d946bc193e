"""SUT ``torchdata``: the default scenario whose data position is torchdata's ``StatefulDataLoader``.

    loader = StatefulDataLoader(dataset, batch_size, sampler=DistributedSampler(...), num_workers=N)
    ckpt.register_for_checkpointing(loader_state, per_rank=True)    # loader.state_dict() per rank
    resume: loader.load_state_dict(saved); iter(loader) continues mid-epoch

Everything else (model, optimizer, scheduler, RNG, counters) is saved by the reference checkpointer,
so a failure here is the data loader's. ``--num-workers 0`` (default) or ``--num-workers 2``: the
certificate runs both (scenario labels ``torchdata`` and ``torchdata_workers``). The loop is the
default scenario's (``harness.scenarios._common.Scenario``), with only the data loader swapped.
Run: ``harness run scenarios/sut/_torchdata.py [-- --num-workers 2]`` or ``harness certify --sut torchdata``.
"""

from __future__ import annotations

from harness.scenarios._common import Run, Scenario


class StatefulLoader:
    """The loop's view of a StatefulDataLoader: epoch, position in the epoch, and its state per rank."""

    def __init__(self, loader, sampler):
        self.loader, self.sampler = loader, sampler
        self.epoch = self.position = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:  # after load_state_dict: continues where the saved state was
            self.position += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "loader": self.loader.state_dict()}

    def load_state_dict(self, sd: dict) -> None:
        self.epoch, self.position = int(sd["epoch"]), int(sd["position"])
        self.sampler.set_epoch(self.epoch)
        self.loader.load_state_dict(sd["loader"])


class Torchdata(Scenario):
    """The default scenario with torchdata's StatefulDataLoader holding the data position."""

    name = "sut/torchdata"

    def build_loader(self, run: Run, dataset):
        from torch.utils.data import DistributedSampler
        from torchdata.stateful_dataloader import StatefulDataLoader

        args = run.args
        sampler = DistributedSampler(dataset, num_replicas=run.world_size, rank=run.rank, shuffle=True,
                                     seed=args.seed, drop_last=True)
        kw = dict(persistent_workers=True, prefetch_factor=2) if args.num_workers > 0 else {}
        return StatefulLoader(StatefulDataLoader(dataset, batch_size=args.batch_size, sampler=sampler, drop_last=True,
                                                 num_workers=args.num_workers, **kw), sampler)

    def prepare(self, run: Run) -> None:
        run.model, run.optimizer, run.scheduler = run.ckpt.prepare(run.model, run.optimizer, run.scheduler)
        run.ckpt.register_for_checkpointing(run.state)
        run.ckpt.register_for_checkpointing(run.loader, per_rank=True)


def main(argv=None) -> None:
    Torchdata().main(argv)


if __name__ == "__main__":
    main()
