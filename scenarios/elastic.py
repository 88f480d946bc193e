"""The elastic scenario: the default MLP, trained so that it can resume on another world size.

``harness run elastic --nproc 2 --resume-nproc 1`` kills it on 2 ranks and resumes it on 1 (see the
README, "Resuming on a different world size"). What makes the training world-size independent:

- the data order: `harness.checkpoint.elastic.elastic_loader` cuts one seeded global order per epoch
  into global batches of ``--global-batch-size`` (24: 1, 2, 3, 4, 6 and 8 ranks divide it); each rank
  takes its slice, so the global batches and the data position (global batches consumed) do not
  depend on the world size;
- no per-rank randomness in the training itself: no dropout, and the augmentation noise of a sample
  is drawn from a generator seeded by (seed, sample index), not from the rank's global RNG;
- the loss of a rank is the mean over its slice, and DDP / FSDP average the gradients over the ranks:
  the same mean over the global batch on every world size, up to the order of the float sums.

What it records for the elastic oracle: per step, the sample indices of its slices (``samples``: per
micro-batch, space-separated, micro-batches separated by ``;``), the data position, the accumulation counter, the scheduler state; after a resume, the state
it restored (``probe.restored``). Under FSDP2 and DeepSpeed ZeRO 1-2 it records full (gathered)
tensors, not its shards or partitions, so that the digests do not depend on the world size.

Default sizes: 192 samples, global batch 24, so 8 global batches per epoch; accum 2: 4 optimizer
steps per epoch, 24 steps = 6 epochs; a checkpoint every 5 steps.
"""

from __future__ import annotations

import torch

from harness import probe
from harness.checkpoint.data import derive_seed
from harness.checkpoint.elastic import elastic_loader
from harness.scenarios._common import NoisyBlobs, Run, Scenario


class IndexedBlobs(NoisyBlobs):
    """NoisyBlobs whose noise is a function of the sample (seed, index), returned with its index."""

    def __init__(self, n: int, dim: int, classes: int, seed: int, noise: float = 0.1) -> None:
        super().__init__(n, dim, classes, seed, noise)
        self.seed = seed

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(derive_seed(self.seed, "sample-noise", int(i)))
        return self.x[i] + self.noise * torch.randn(self.x.shape[1], generator=g), self.y[i], torch.tensor(int(i))


class _FullModel:
    """What the probe hashes of an FSDP2 model: full (gathered) parameters, named as in the model. Collective."""

    def __init__(self, model) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        self._sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))

    def named_parameters(self):
        return iter(self._sd.items())

    def named_buffers(self):
        return iter(())

    def state_dict(self):
        return dict(self._sd)


class _FullOptimizer:
    """What the probe hashes of an FSDP2 optimizer: its full state dict, keyed by parameter name. Collective."""

    def __init__(self, model, optimizer) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        self._sd = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True))
        self.param_groups = [{"params": []} for _ in self._sd["param_groups"]]

    def state_dict(self):
        return self._sd


def _gathered(part: torch.Tensor, numel: int) -> torch.Tensor:
    """The full flat tensor of a ZeRO group from every rank's equal-size partition (padding dropped). Collective."""
    import torch.distributed as dist

    parts = [torch.empty_like(part) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, part.detach().contiguous())
    return torch.cat(parts)[:numel]


class _ZeROFull:
    """What the probe hashes under DeepSpeed ZeRO 1-2: the module's (full) parameters, each fp32 master group
    gathered from its partitions, and the base optimizer's state of each group gathered likewise, so that the
    digests do not depend on the data-parallel size. Collective."""

    def __init__(self, engine, optimizer) -> None:
        zero = engine.optimizer
        numels = [sum(p.numel() for p in group) for group in zero.bit16_groups]
        self._sd = {n: p.detach() for n, p in engine.module.named_parameters()}
        state = {}
        for g, (part, n) in enumerate(zip(zero.single_partition_of_fp32_groups, numels)):
            self._sd[f"master_{g}"] = _gathered(part, n)
            st = optimizer.state.get(part, {})
            state[g] = {k: _gathered(v, n) if isinstance(v, torch.Tensor) and v.dim() else v for k, v in sorted(st.items())}
        groups = [{**{k: v for k, v in grp.items() if k != "params"}, "params": [g]}
                  for g, grp in enumerate(optimizer.param_groups)]
        self._opt = {"state": state, "param_groups": groups}
        self.param_groups = [{"params": []} for _ in groups]

    def named_parameters(self):
        return iter(self._sd.items())

    def named_buffers(self):
        return iter(())

    def state_dict(self):
        return self._opt


class Elastic(Scenario):
    """The default MLP with an elastic data order (ElasticSampler) and no per-rank randomness: resumes on any world size."""

    name = "elastic"
    defaults = {**Scenario.defaults, "samples": 192, "dropout": 0.0, "accum": 2}

    def add_arguments(self, p) -> None:
        p.add_argument("--global-batch-size", type=int, default=24,
                       help="samples per global micro-batch, split over the ranks (%(default)s)")

    def build_dataset(self, args):
        return IndexedBlobs(args.samples, args.dim, args.classes, seed=args.seed)

    def build_loader(self, run: Run, dataset):
        return elastic_loader(dataset, run.args.global_batch_size, seed=run.args.seed, num_replicas=run.world_size,
                              rank=run.rank, num_workers=run.args.num_workers)

    def forward_loss(self, run: Run, batch) -> torch.Tensor:
        x, y, idx = batch
        run.extras.setdefault("samples", []).append(" ".join(map(str, idx.tolist())))
        return torch.nn.functional.cross_entropy(run.model(x), y)

    def _position(self, run: Run) -> dict:
        return dict(data_epoch=run.loader.epoch, data_position=run.loader.position, micro=run.state.micro,
                    scheduler=run.scheduler.state_dict(), lr=run.scheduler.get_last_lr()[0])

    def step_extra(self, run: Run) -> dict:
        samples = ";".join(run.extras.pop("samples", []))  # micro-batches of the window, in order
        return {"samples": samples, **{k: v for k, v in self._position(run).items() if k != "lr"}}

    def after_load(self, run: Run) -> None:
        if run.resumed_from is not None:
            probe.restored(run.ckpt.step, model=self._probe_model(run), optimizer=self._probe_optimizer(run),
                           **self._position(run))

    @staticmethod
    def _zero_full(run: Run):
        if run.strategy in ("deepspeed-zero1", "deepspeed-zero2"):
            view = _ZeROFull(run.model, run.optimizer)  # one gather serves the model and the optimizer
            run.extras["zero_full"] = view
            return view
        return None

    @staticmethod
    def _probe_model(run: Run):
        if run.strategy == "fsdp":
            return _FullModel(run.model)
        return Elastic._zero_full(run) or Scenario._probe_model(run)

    @staticmethod
    def _probe_optimizer(run: Run):
        if run.strategy == "fsdp":
            return _FullOptimizer(run.model, run.optimizer)
        if run.strategy in ("deepspeed-zero1", "deepspeed-zero2"):
            return run.extras.pop("zero_full")  # built by _probe_model, called just before
        return Scenario._probe_optimizer(run)


def main(argv=None) -> None:
    Elastic().main(argv)


if __name__ == "__main__":
    main()
