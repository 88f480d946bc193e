"""Bad input to harness certify: each a clear error, exit code 2, before anything runs."""

from __future__ import annotations

import json
import os

import pytest

from harness.certify import matrix, report_json
from harness.cli import main

from certify_support import certificate, spec


def _err(capsys) -> str:
    return capsys.readouterr().err


def test_unknown_strategy(capsys, tmp_path):
    assert main(["certify", "--strategy", "zero9", "--out", str(tmp_path / "o")]) == 2
    err = _err(capsys)
    assert "unknown strategy 'zero9'" in err and "deepspeed-zero3" in err
    assert not (tmp_path / "o").exists()


def test_unknown_sut(capsys, tmp_path):
    assert main(["certify", "--sut", "megatron", "--out", str(tmp_path / "o")]) == 2
    assert "unknown SUT 'megatron'; choose one of reference, accelerate, deepspeed, torchdata" in _err(capsys)


def test_sut_whose_library_is_missing_names_the_extra(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(matrix.SUT_LIBRARIES, "torchdata", ("no_such_module_for_the_test", "torchdata"))
    assert main(["certify", "--sut", "torchdata", "--out", str(tmp_path / "o")]) == 2
    err = _err(capsys)
    assert "not installed" in err and "pip install 'resume-harness[torchdata]'" in err


def test_strategy_that_does_not_apply_to_the_sut(capsys, tmp_path):
    assert main(["certify", "--sut", "accelerate", "--strategy", "fsdp", "--out", str(tmp_path / "o")]) == 2
    assert "--sut accelerate trains with DDP only" in _err(capsys)


@pytest.mark.parametrize("shard", ["5/4", "0/4", "two/4"])
def test_shard_out_of_range(capsys, tmp_path, shard):
    assert main(["certify", "--shard", shard, "--out", str(tmp_path / "o")]) == 2
    assert "--shard" in _err(capsys)
    assert not (tmp_path / "o").exists()


def _write(folder, cert):
    os.makedirs(folder, exist_ok=True)
    report_json.write(cert, str(folder))
    return str(folder)


def test_merge_of_different_campaigns(capsys, tmp_path):
    a = _write(tmp_path / "a", certificate(spec(seed=0)))
    b = _write(tmp_path / "b", certificate(spec(trials=3)))
    assert main(["certify", "merge", a, b, "--out", str(tmp_path / "m")]) == 2
    assert "different campaigns" in _err(capsys)
    assert not (tmp_path / "m" / "certificate.json").exists()


def test_merge_of_a_folder_without_certificate(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    assert main(["certify", "merge", str(tmp_path / "empty"), "--out", str(tmp_path / "m")]) == 2
    assert "holds no certificate" in _err(capsys)


def test_an_older_certificate_is_never_overwritten_silently(capsys, tmp_path):
    old = _write(tmp_path / "out", certificate())
    before = open(os.path.join(old, "certificate.json")).read()
    assert main(["certify", "--world-sizes", "1", "--classes", "step_kill", "--trials", "1", "--out", old]) == 2
    err = _err(capsys)
    assert "already holds a certificate" in err and "--force" in err
    assert open(os.path.join(old, "certificate.json")).read() == before
    # merge into it is refused too
    a = _write(tmp_path / "a", certificate())
    assert main(["certify", "merge", a, "--out", old]) == 2
    assert json.load(open(os.path.join(old, "certificate.json"))) == json.loads(before)
    # --force replaces it
    assert main(["certify", "merge", a, "--out", old, "--force"]) == 1  # the certificate has failures
    assert os.path.isfile(os.path.join(old, "certificate.html"))


def test_merge_writes_all_reports_and_junit(capsys, tmp_path):
    sp = spec()
    from harness.certify.shard import select

    parts = [_write(tmp_path / f"s{i}", certificate(sp, shard=(i, 2), cells=select(sp.cells(), (i, 2))))
             for i in (1, 2)]
    rc = main(["certify", "merge", *parts, "--out", str(tmp_path / "m"), "--junit", str(tmp_path / "j.xml")])
    assert rc == 1
    out = capsys.readouterr().out
    assert out.startswith("FAIL: 8/10 trials bit-exact")
    merged = report_json.read(str(tmp_path / "m"))
    assert merged["summary"]["complete"] and len(merged["campaign"]["shards"]) == 2
    assert (tmp_path / "m" / "certificate.md").is_file() and (tmp_path / "j.xml").is_file()
