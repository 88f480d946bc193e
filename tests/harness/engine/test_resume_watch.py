"""ResumeWatch: ranks that restored different steps are found from their first rows, however large the rows
(the bug it had: reading only a file's last 64 KiB skipped the checkpoint.loaded event of a rank whose step
rows are large, and took its first step row seen for a rank that loaded nothing)."""

from __future__ import annotations

import json

from harness.engine.resume_watch import ResumeWatch


def _write(path, rows):
    with open(path, "a") as f:
        for row in rows:
            f.write(json.dumps(row, separators=(",", ":")) + "\n")


def _step(rank, step, attempt, pad=0):
    return {"kind": "step", "attempt": attempt, "rank": rank, "step": step, "extra": {"pad": "x" * pad}}


def _loaded(rank, step, attempt):
    return {"kind": "event", "attempt": attempt, "rank": rank, "name": "checkpoint.loaded", "step": 0,
            "info": {"step": step}}


def test_large_rows_after_the_loaded_event_are_not_taken_for_a_fresh_start(tmp_path):
    for r in (0, 1):
        _write(tmp_path / f"rank{r}.jsonl", [_step(r, s, 0, pad=20000) for s in range(1, 11)])
    watch = ResumeWatch(str(tmp_path), 2, 1)
    for r in (0, 1):  # both load step 8, then write large rows (more than 64 KiB) before the next check
        _write(tmp_path / f"rank{r}.jsonl", [_loaded(r, 8, 1), *[_step(r, s, 1, pad=30000) for s in range(9, 14)]])
    assert watch.check() is None and watch.loaded == {0: 8, 1: 8}


def test_ranks_apart_and_a_rank_that_loaded_nothing(tmp_path):
    for r in (0, 1, 2):
        _write(tmp_path / f"rank{r}.jsonl", [_step(r, s, 0) for s in range(1, 13)])
    watch = ResumeWatch(str(tmp_path), 3, 1)
    _write(tmp_path / "rank0.jsonl", [_loaded(0, 10, 1)])
    assert watch.check() is None  # one rank known: nothing to compare yet
    with open(tmp_path / "rank1.jsonl", "a") as f:  # a row written in two pieces: read once complete
        f.write(json.dumps(_step(1, 1, 1), separators=(",", ":"))[:20])
    assert watch.check() is None
    with open(tmp_path / "rank1.jsonl", "a") as f:
        f.write(json.dumps(_step(1, 1, 1), separators=(",", ":"))[20:] + "\n")
    reason = watch.check()
    assert reason is not None and "rank 0 step 10, rank 1 step 0" in reason



def test_the_watch_and_the_oracle_take_the_same_row_for_where_a_rank_resumed(tmp_path):
    """One rule (trace_schema.resumed_from), the first row that shows it. A rank that trained a step and then
    loaded a checkpoint mid-attempt resumed from where it trained, for the watch and for ranks_apart alike
    (the oracle used to prefer any checkpoint.loaded of the attempt, and judged apart what the watch let run)."""
    from harness.oracle import load_trace
    from harness.oracle.lifecycle import ranks_apart

    def trial(folder, rank2_rows):
        folder.mkdir()
        for r in (0, 1, 2):
            _write(folder / f"rank{r}.jsonl", [_step(r, s, 0) for s in range(1, 9)])
        watch = ResumeWatch(str(folder), 3, 1)
        for r in (0, 1):
            _write(folder / f"rank{r}.jsonl", [_loaded(r, 6, 1), *[_step(r, s, 1) for s in range(7, 9)]])
        _write(folder / "rank2.jsonl", rank2_rows)
        return watch.check(), ranks_apart(load_trace(folder))

    reason, apart = trial(tmp_path / "mid", [_step(2, 7, 1), _loaded(2, 4, 1), _step(2, 5, 1)])
    assert reason is None and apart is None
    reason, apart = trial(tmp_path / "apart", [_loaded(2, 4, 1), _step(2, 5, 1)])
    assert reason is not None and "rank 0 step 6, rank 1 step 6, rank 2 step 4" in reason
    assert apart == (1, {0: 6, 1: 6, 2: 4})
