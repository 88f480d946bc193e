"""BUGGY: the data loader's iterator draws its base seed from the global torch RNG.

The mistake (prior-art pitfall 3): ``iter(DataLoader(...))`` without ``generator=`` draws one int64
from the *global* torch RNG for its base seed. Here the script does not use the checkpointer's
resumable loader but the common hand-rolled resume (below): save (epoch, position), and on resume
build a loader that skips the consumed batches, like ``accelerate.skip_first_batches``. That loader
is correct except for its missing ``generator=``: the uninterrupted run draws once per epoch, at
the epoch start, before anything is saved; the resumed run draws again when it rebuilds its
iterator mid-epoch, so every later torch draw (augmentation noise, dropout) is shifted.

Expected first divergence (default sizes, kill ``12``: resume from step 10, in epoch 3): step 11,
rank 0, fields batch, rng:torch, loss, params, optimizer; rng:numpy and rng:python stay equal.
"""

from torch.utils.data import BatchSampler, DataLoader

from harness.scenarios._common import Scenario


class SkipFirstBatchesLoader:
    """A hand-rolled resumable loader: (epoch, position) as state, consumed batches skipped by index."""

    def __init__(self, loader: DataLoader) -> None:
        self.dataset, self.sampler, self.batch_size = loader.dataset, loader.sampler, loader.batch_size
        self.collate_fn = loader.collate_fn
        self.epoch = self.position = 0

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0

    def __iter__(self):
        self.sampler.set_epoch(self.epoch)
        batches = list(BatchSampler(self.sampler, self.batch_size, drop_last=True))[self.position:]
        # BUG: no generator=: creating this loader's iterator draws a base seed from the global torch RNG.
        for batch in DataLoader(self.dataset, batch_sampler=batches, collate_fn=self.collate_fn):
            self.position += 1
            yield batch
        self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, sd: dict) -> None:
        self.epoch, self.position = int(sd["epoch"]), int(sd["position"])


class LoaderGlobalRng(Scenario):
    """BUGGY default: a hand-rolled skip-first-batches loader whose iterator draws from the global torch RNG."""

    name = "buggy/loader_global_rng"

    def prepare(self, run) -> None:
        run.model, run.optimizer, run.scheduler = run.ckpt.prepare(run.model, run.optimizer, run.scheduler)
        run.loader = SkipFirstBatchesLoader(run.loader)
        run.ckpt.register_for_checkpointing(run.loader, per_rank=True)
        run.ckpt.register_for_checkpointing(run.state)


def main(argv=None) -> None:
    LoaderGlobalRng().main(argv)


if __name__ == "__main__":
    main()
