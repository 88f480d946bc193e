"""BUGGY: the EMA model is not registered with the checkpointer (scenarios/ema.py minus one line).

The mistake (prior-art pitfall 11): the EMA weights live outside the model/optimizer, nobody saves
them; after a resume the EMA is rebuilt from the restored weights with its update counter at 0.
Training itself is unaffected, so losses and parameters match: only the EMA differs.

Expected first divergence (default sizes, e.g. kill ``12``, resume from step 10): step 11, rank 0,
fields exactly ["extra:ema"].
"""

from harness.scenarios.ema import EMA, WithEMA


class EmaNotRegistered(WithEMA):
    """BUGGY ema scenario: the EMA is not registered for checkpointing."""

    name = "buggy/ema_not_registered"

    def prepare(self, run) -> None:
        super(WithEMA, self).prepare(run)  # the default registrations
        run.extras["ema"] = EMA(run.model)
        # BUG: missing run.ckpt.register_for_checkpointing(run.extras["ema"])


def main(argv=None) -> None:
    EmaNotRegistered().main(argv)


if __name__ == "__main__":
    main()
