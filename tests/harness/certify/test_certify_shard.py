"""--shard i/N partitions the matrix exactly; merge joins shards of one campaign and refuses others."""

from __future__ import annotations

import pytest

from harness.certify.errors import CertifyError
from harness.certify.matrix import CampaignSpec
from harness.certify.shard import merge, parse_shard, select

from certify_support import certificate, spec


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 40])
def test_shards_partition_the_matrix(n):
    cells = CampaignSpec.make(check_installed=False).cells()
    slices = [select(cells, (i, n)) for i in range(1, n + 1)]
    flat = [c for s in slices for c in s]
    assert sorted(c.id for c in flat) == sorted(c.id for c in cells)
    assert len(flat) == len(set(c.id for c in flat))
    assert max(map(len, slices)) - min(map(len, slices)) <= 1
    assert select(cells, (1, n)) == slices[0]  # deterministic


@pytest.mark.parametrize("text", ["0/3", "4/3", "1/0", "x", "2", "-1/3"])
def test_shard_out_of_range_or_malformed(text):
    with pytest.raises(CertifyError, match="--shard"):
        parse_shard(text)


def test_merge_joins_shards_into_one_certificate():
    sp = spec()
    cells = sp.cells()
    parts = [certificate(sp, shard=(i, 2), cells=select(cells, (i, 2))) for i in (1, 2)]
    assert all(not p["summary"]["complete"] for p in parts)
    merged = merge(parts)
    whole = certificate(sp)
    assert merged["summary"]["complete"]
    assert [c["id"] for c in merged["cells"]] == [c["id"] for c in whole["cells"]]
    assert {k: merged["summary"][k] for k in ("verdict", "trials", "failed", "cells_failed", "cells_na")} == \
        {k: whole["summary"][k] for k in ("verdict", "trials", "failed", "cells_failed", "cells_na")}
    assert merged["campaign"]["shard"] is None and len(merged["campaign"]["shards"]) == 2


def test_merge_of_a_missing_shard_marks_cells_not_run():
    sp = spec()
    merged = merge([certificate(sp, fail_ws3=False, shard=(1, 3), cells=select(sp.cells(), (1, 3)))])
    assert merged["summary"]["cells_not_run"] > 0
    assert merged["summary"]["verdict"] == "error" and merged["summary"]["exit_code"] == 2


def test_merge_refuses_different_campaigns():
    a = certificate(spec(seed=0), shard=(1, 2), cells=select(spec().cells(), (1, 2)))
    b = certificate(spec(seed=1), shard=(2, 2), cells=select(spec(seed=1).cells(), (2, 2)))
    with pytest.raises(CertifyError, match="different campaigns"):
        merge([a, b])


def test_merge_refuses_the_same_shard_twice():
    sp = spec()
    a = certificate(sp, shard=(1, 2), cells=select(sp.cells(), (1, 2)))
    with pytest.raises(CertifyError, match="certified by two"):
        merge([a, a])
