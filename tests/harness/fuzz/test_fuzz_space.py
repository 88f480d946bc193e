"""FaultSpace and Coverage from synthetic baseline traces (no processes)."""

from __future__ import annotations

from hypothesis import given, settings

from harness.faults import Fault, FaultPlan
from harness.fuzz.coverage import CoverageCounter
from harness.fuzz.space import FaultSpace
from harness.oracle import load_trace

from support.traces import TraceBuilder

WINDOWS = [4, 4, 2, 2, 4, 4, 4, 4, 2, 2, 4, 4]  # 12 steps; short windows around the epoch ends at 3 and 9
EPOCHS = [0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2]


def synthetic_baseline(path, *, extras=True, micro_points=True):
    """12 steps on 2 ranks, checkpoints committed at 4 and 8 (rank 0 writes 3 files per save, rank 1 one)."""
    b = TraceBuilder(path, 2).start(0)
    for s in range(1, 13):
        if micro_points:
            for _ in range(WINDOWS[s - 1]):
                b.event(0, "microbatch", s - 1)
        b.steps(0, s, s)
        if extras:
            for r in range(2):
                b.row(r, s, 0)["extra"].update(window=WINDOWS[s - 1], epoch=EPOCHS[s - 1])
        if s in (4, 8):
            b.event(0, "checkpoint.begin", s)
            for _ in range(3):
                b.event(0, "checkpoint.write", s, ranks=[0])
            b.event(0, "checkpoint.write", s, ranks=[1])
            b.event(0, "checkpoint.commit", s, ranks=[0])
            b.event(0, "checkpoint.committed", s, path=f"checkpoints/checkpoint_{s}")
        if s == 6:
            b.event(0, "my.probe", s)
    return load_trace(b.finish(0).write())


def test_space_from_a_baseline_trace(tmp_path):
    space = FaultSpace.from_trace(synthetic_baseline(tmp_path / "b"), nproc=2, max_faults=2)
    assert space.last_step == 12 and space.committed == (4, 8) and space.nproc == 2 and space.max_faults == 2
    assert dict(space.points) == {"microbatch": 40, "checkpoint.begin": 2, "checkpoint.write": 6,
                                  "checkpoint.commit": 2, "checkpoint.committed": 2, "my.probe": 1}
    assert [n for n, _ in space.points][:2] == ["microbatch", "checkpoint.begin"]  # order of first use
    assert space.epoch_ends == (3, 9)
    assert space.accum_boundaries == (3, 4, 9, 10)
    # first/last, around each checkpoint (3,4,5 and 7,8,9), epoch ends, accumulation boundaries
    assert space.boundary_steps == (1, 3, 4, 5, 7, 8, 9, 10, 12)
    occ = dict(space.boundary_occurrences)
    assert occ["checkpoint.write"] == (1, 3, 4, 6)  # first and last file of each save on rank 0
    assert occ["microbatch"][:6] == (1, 4, 5, 8, 9, 10)  # first and last micro-batch of each window
    assert space.ranks == [0, 1, "all"]


def test_accumulation_boundaries_from_micro_batch_points_without_extras(tmp_path):
    space = FaultSpace.from_trace(synthetic_baseline(tmp_path / "b", extras=False), nproc=2)
    assert space.epoch_ends == () and space.accum_boundaries == (3, 4, 9, 10)


def test_a_trace_without_points_or_checkpoints(tmp_path):
    b = TraceBuilder(tmp_path / "b", 1).start(0).steps(0, 1, 5).finish(0)
    space = FaultSpace.from_trace(load_trace(b.write()), nproc=1)
    assert space.points == () and space.committed == () and space.boundary_steps == (1, 5)

    @settings(max_examples=50, database=None)
    @given(plan=space.strategy())
    def check(plan):
        assert all(f.step is not None and 1 <= f.step <= 5 and f.rank in (0, "all") for f in plan)

    check()


def test_classes_of_faults(tmp_path):
    space = FaultSpace.from_trace(synthetic_baseline(tmp_path / "b"), nproc=2)
    assert space.classes(Fault(step=1)) == ("first step",)
    assert space.classes(Fault(step=12)) == ("last step",)
    assert space.classes(Fault(step=8)) == ("just before a checkpoint",)
    assert space.classes(Fault(step=5)) == ("just after a checkpoint",)
    assert space.classes(Fault(step=3)) == ("just before a checkpoint", "epoch end", "accumulation boundary")
    assert space.classes(Fault(step=6)) == ("interior step",)
    assert space.classes(Fault(point="checkpoint.write", occurrence=2)) == ("mid-save",)
    assert space.classes(Fault(point="checkpoint.write", occurrence=4)) == ("mid-save", "boundary occurrence")
    assert space.classes(Fault(point="checkpoint.committed")) == ("after commit", "boundary occurrence")
    assert space.classes(Fault(point="microbatch", occurrence=2)) == ("mid-accumulation",)
    assert space.classes(Fault(point="my.probe")) == ("user point", "boundary occurrence")
    # "first step" is not asked for: step 1 comes before the first complete checkpoint (4), nothing to resume
    assert set(space.expected_classes()) == {
        "last step", "interior step", "just before a checkpoint", "just after a checkpoint",
        "epoch end", "accumulation boundary", "mid-save", "after commit", "mid-accumulation", "user point"}


def test_the_strategy_stays_inside_the_space(tmp_path):
    space = FaultSpace.from_trace(synthetic_baseline(tmp_path / "b"), nproc=2, max_faults=2)
    points = dict(space.points)

    @settings(max_examples=150, database=None)
    @given(plan=space.strategy())
    def check(plan):
        assert 1 <= len(plan) <= 2
        for f in plan:
            assert f.rank in (0, 1, "all")
            assert (1 <= f.step <= 12) if f.step is not None else (1 <= f.occurrence <= points[f.point])

    check()


def test_coverage_counts_and_names_what_was_never_tried(tmp_path):
    space = FaultSpace.from_trace(synthetic_baseline(tmp_path / "b"), nproc=2, max_faults=3)
    counter = CoverageCounter(space)
    counter.add(FaultPlan.parse("5"))
    counter.add(FaultPlan.parse("checkpoint.write:2@all:SIGTERM,9@1"))
    cov = counter.snapshot()
    assert dict(cov.signals) == {"SIGKILL": 2, "SIGTERM": 1}
    assert dict(cov.ranks) == {"one rank": 2, "all ranks": 1}
    assert dict(cov.rank_numbers) == {"0": 1, "1": 1, "all": 1}
    assert dict(cov.plan_sizes) == {"1": 1, "2": 1}
    assert dict(cov.where) == {"step": 2, "checkpoint.write": 1}
    assert dict(cov.classes)["mid-save"] == 1 and dict(cov.classes)["just after a checkpoint"] == 2
    assert "exception" in cov.never_tried and "mid-accumulation" in cov.never_tried
    assert "multi-fault plans" not in cov.never_tried and "SIGTERM" not in cov.never_tried
    assert "mid-save" not in cov.never_tried
    single = CoverageCounter(space)
    single.add(FaultPlan.parse("5"))
    assert "multi-fault plans" in single.snapshot().never_tried
    assert cov.to_json()["never_tried"] == list(cov.never_tried)


def test_later_step_faults_before_the_resumed_checkpoint_cannot_fire(tmp_path):
    space = FaultSpace.from_trace(synthetic_baseline(tmp_path / "b"), nproc=2)  # checkpoints at 4 and 8
    assert [space.resumes_from(s) for s in (3, 4, 5, 8, 9, 12)] == [0, 0, 4, 4, 8, 8]
    assert space.unreachable(FaultPlan.parse("10,8")) == 1  # resumes from 8: step 8 is never re-run
    assert space.unreachable(FaultPlan.parse("10,9@all")) is None  # steps 9.. are re-run
    assert space.unreachable(FaultPlan.parse("6,5,4")) == 2  # 6 -> from 4, 5 fires -> from 4, 4 never
    # 10 -> from 8; the write fires in a save after that, so attempt 2 resumes from 4 at the earliest: 1 never
    assert space.unreachable(FaultPlan.parse("10,checkpoint.write,1")) == 2
    assert space.unreachable(FaultPlan.parse("10,checkpoint.write,5")) is None
    assert space.unreachable(FaultPlan.parse("3")) is None


def test_kills_before_the_first_complete_checkpoint_are_told_and_not_weighted_up(tmp_path):
    space = FaultSpace.from_trace(synthetic_baseline(tmp_path / "b"), nproc=2)  # first complete checkpoint: 4
    early = space.before_first_checkpoint
    assert [early(Fault(step=s)) for s in (1, 4, 5)] == [True, True, False]  # a kill at 4 comes before its save
    # rank 0 writes 3 files in the save of step 4, rank 1 one; the commit itself completes it
    assert early(Fault(point="checkpoint.write", occurrence=3)) and not early(Fault(point="checkpoint.write", occurrence=4))
    assert early(Fault(point="checkpoint.write", occurrence=1, rank=1))
    assert not early(Fault(point="checkpoint.write", occurrence=2, rank=1))
    assert early(Fault(point="checkpoint.write", occurrence=3, rank="all"))
    assert not early(Fault(point="checkpoint.committed")) and not early(Fault(point="my.probe"))
    assert space.favoured_steps == (5, 7, 8, 9, 10, 12)  # the boundaries after the first checkpoint only
    assert space.favoured_occurrences()["checkpoint.write"] == (4, 6)


def auto_baseline(path, *, saves=(4, 8)):
    """What auto mode records for a plain script: 12 steps on 2 ranks; at each save rank 0 calls torch.save
    twice (model, optimizer), rank 1 once, each call followed by checkpoint.committed (via torch.save);
    then an auto.* event and the harness's own final-state write, which auto mode sees as a save_file call."""
    b = TraceBuilder(path, 2).start(0)
    for s in range(1, 13):
        b.steps(0, s, s)
        for r, files in ((0, 2), (1, 1)):
            for k in range(files if s in saves else 0):
                b.event(0, "torch.save", s, ranks=[r], path=f"ckpt/step{s}_{k}.pt")
                b.event(0, "checkpoint.committed", s, ranks=[r], via="torch.save", path=f"ckpt/step{s}_{k}.pt")
    b.event(0, "auto.unseen", 12, modules=["ema"])
    for r in range(2):
        final = f"/cache/baseline0/trace/final/rank{r}.safetensors.tmp"
        b.event(0, "safetensors.save_file", 12, ranks=[r], path=final)
        b.event(0, "checkpoint.committed", 12, ranks=[r], via="safetensors.save_file", path=final)
    return load_trace(b.finish(0).write())


def test_an_auto_mode_baseline_gives_its_save_calls_as_points(tmp_path):
    space = FaultSpace.from_trace(auto_baseline(tmp_path / "b"), nproc=2, auto=True)
    # the script's own saves only: no auto.* event, no harness final-state file (so no checkpoint at 12)
    assert dict(space.points) == {"torch.save": 4, "checkpoint.committed": 4}
    assert space.committed == (4, 8) and space.auto and space.to_json()["auto"] is True
    assert space.between_files == (("torch.save", (2, 4)),)  # rank 0's second file of each checkpoint
    assert space.classes(Fault(point="torch.save", occurrence=2)) == ("mid-save", "between two files",
                                                                      "boundary occurrence")
    assert space.classes(Fault(point="torch.save", occurrence=3)) == ("mid-save", "boundary occurrence")
    assert {"mid-save", "between two files", "after commit"} <= set(space.expected_classes())
    early = space.before_first_checkpoint
    # both files of step 4 and the commits after them: no rank has trained past 4 yet
    assert early(Fault(point="torch.save", occurrence=2)) and early(Fault(point="checkpoint.committed", occurrence=2))
    assert not early(Fault(point="torch.save", occurrence=3)) and not early(Fault(point="torch.save", occurrence=2, rank=1))
    assert space.favoured_occurrences()["torch.save"] == (3, 4)


def test_a_baseline_without_a_complete_checkpoint_has_nothing_to_favour(tmp_path):
    space = FaultSpace.from_trace(auto_baseline(tmp_path / "b", saves=()), nproc=2, auto=True)
    assert space.committed == () and space.first_checkpoint is None
    assert all(space.before_first_checkpoint(Fault(step=s)) for s in (1, 6, 12))
    assert "first step" not in space.expected_classes()


def baseline_committing_at(path, commits=(5, 10), steps=12):
    """``steps`` steps on 2 ranks, a checkpoint committed at each of ``commits`` (one file per rank)."""
    b = TraceBuilder(path, 2).start(0)
    for s in range(1, steps + 1):
        b.steps(0, s, s)
        if s in commits:
            b.event(0, "checkpoint.begin", s)
            b.event(0, "checkpoint.write", s)
            b.event(0, "checkpoint.commit", s, ranks=[0])
            b.event(0, "checkpoint.committed", s, path=f"checkpoints/checkpoint_{s}")
    return load_trace(b.finish(0).write())


def draw(space, n):
    """``n`` plans drawn from the space's strategy (duplicates included)."""
    plans = []

    @settings(max_examples=n, database=None, derandomize=True)
    @given(plan=space.strategy())
    def collect(plan):
        plans.append(plan)

    collect()
    return plans


def test_at_most_one_kill_before_the_first_checkpoint_per_class(tmp_path):
    from harness.fuzz.space import EarlyKillGate

    space = FaultSpace.from_trace(baseline_committing_at(tmp_path / "b"), nproc=2, max_faults=2)
    assert space.first_checkpoint == 5
    plans = draw(space, 300)
    assert sum(space.early_class(p) is not None for p in plans) > 2 * len({space.early_class(p) for p in plans})
    gate = EarlyKillGate(space)
    admitted = [p for p in plans if gate.admit(p)]
    early = [space.early_class(p) for p in admitted if space.early_class(p) is not None]
    assert early and len(early) == len(set(early))  # one trial per class, not a stream of them
    assert gate.skipped == sum(space.early_class(p) is not None for p in plans) - len(early)
    assert all(gate.admit(p) for p in plans if space.early_class(p) is None)  # after the checkpoint: always


def test_an_early_class_whose_trial_resumed_keeps_being_tried(tmp_path):
    from harness.fuzz.space import EarlyKillGate

    space = FaultSpace.from_trace(baseline_committing_at(tmp_path / "b"), nproc=2)
    gate = EarlyKillGate(space)
    term, kill = FaultPlan.parse("3:SIGTERM"), FaultPlan.parse("3")
    assert space.early_class(term) != space.early_class(kill) and space.early_class(FaultPlan.parse("6")) is None
    assert gate.admit(term) and gate.admit(kill)
    gate.record(term, "pass")  # a SIGTERM handler saved: the baseline's prediction was wrong for the class
    gate.record(kill, "error")  # no resume tested
    assert gate.admit(FaultPlan.parse("2:SIGTERM")) and not gate.admit(FaultPlan.parse("4"))
    # with nothing to resume, which one rank dies makes no class of its own; one rank or all does
    one, other, every = (space.early_class(FaultPlan.parse(p)) for p in ("3@0", "4@1", "3@all"))
    assert one == other != every
    assert gate.skipped == 1


def test_plans_whose_later_fault_cannot_fire_are_never_drawn(tmp_path):
    space = FaultSpace.from_trace(baseline_committing_at(tmp_path / "b"), nproc=2, max_faults=3)
    plans = draw(space, 300)
    multi = [p for p in plans if len(p) > 1 and all(f.step is not None for f in p)]
    assert len(multi) > 20  # the check below has something to check
    assert all(space.unreachable(p) is None for p in plans)


def test_a_point_fault_on_a_rank_that_never_reaches_the_point_is_never_drawn(tmp_path):
    """Only the writer (rank 0) commits: checkpoint.commit on rank 1 would end as fault_not_fired."""
    from harness.faults import FaultPlan

    space = FaultSpace.from_trace(baseline_committing_at(tmp_path / "b"), nproc=2, max_faults=2)
    assert space.unreachable(FaultPlan.parse("checkpoint.commit:1@1")) == 0
    assert space.unreachable(FaultPlan.parse("7,checkpoint.commit@1")) == 1
    for fine in ("checkpoint.commit:1@0", "checkpoint.commit:1@all", "checkpoint.write:1@1"):
        assert space.unreachable(FaultPlan.parse(fine)) is None, fine
    plans = draw(space, 300)
    on_rank_1 = [f for p in plans for f in p if f.point == "checkpoint.commit" and f.rank == 1]
    assert not on_rank_1 and any(f.point == "checkpoint.commit" for p in plans for f in p)


def test_a_later_point_fault_beyond_the_resumed_attempts_occurrences_is_unreachable():
    """Attempt 2 counts a point's occurrences from 1 again and re-runs only the steps after the checkpoint it
    resumes from: occurrence k of a point the baseline made fewer than k times from there on never fires."""
    from harness.engine.baseline import BaselineProfile
    from harness.faults import FaultPlan

    micro = {r: [s for s in range(24) for _ in range(4)] for r in (0, 1)}  # 4 per step, 96 in all, per rank
    profile = BaselineProfile(auto=False, last_step=24, complete=(5, 10, 15, 20), points={"micro": micro})
    space = FaultSpace(nproc=2, last_step=24, points=(("micro", 96),), committed=(5, 10, 15, 20), profile=profile)
    # a kill at micro 63 (step 15): the job resumes from step 10 at the earliest, and makes 4 * 14 = 56 more
    assert space.unreachable(FaultPlan.parse(["micro:63@all", "micro:63"])) == 1
    assert space.unreachable(FaultPlan.parse(["micro:63@all", "micro:56"])) is None
    assert space.unreachable(FaultPlan.parse(["12", "micro:56"])) is None  # resumes from 10: 56 left
    assert space.unreachable(FaultPlan.parse(["12", "micro:57"])) == 1
    # without the profile nothing about points is predicted
    bare = FaultSpace(nproc=2, last_step=24, points=(("micro", 96),), committed=(5, 10, 15, 20))
    assert bare.unreachable(FaultPlan.parse(["12", "micro:90"])) is None
