import json
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from harness import probe
from harness.probe import digest, recorder, state_digest


@pytest.fixture
def trace_dir(tmp_path, monkeypatch):
    """Turn the probe on for this process, as the harness would for rank 1, attempt 2."""
    trace = tmp_path / "trace"
    monkeypatch.setenv("HARNESS_TRACE_DIR", str(trace))
    monkeypatch.setenv("HARNESS_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("HARNESS_ATTEMPT", "2")
    monkeypatch.delenv("HARNESS_FAULT", raising=False)
    monkeypatch.setattr(recorder, "_recorder", None)
    yield trace
    if recorder._recorder:
        os.close(recorder._recorder.fd)


def rows(trace):
    with open(trace / "rank1.jsonl") as f:
        return [json.loads(line) for line in f]


def test_outside_the_harness_every_call_is_a_no_op(tmp_path, monkeypatch):
    monkeypatch.delenv("HARNESS_TRACE_DIR", raising=False)
    monkeypatch.delenv("HARNESS_RUN_DIR", raising=False)
    monkeypatch.setattr(recorder, "_recorder", None)
    monkeypatch.chdir(tmp_path)
    model = torch.nn.Linear(2, 2)
    probe.step(1, loss=1.0, batch=torch.ones(2), model=model)
    probe.point("checkpoint.write")
    probe.finish(model=model)
    assert not probe.enabled()
    assert probe.run_dir() == str(tmp_path / "resume-harness-run")
    assert sorted(os.listdir(tmp_path)) == ["resume-harness-run"]
    monkeypatch.setenv("HARNESS_RUN_DIR", str(tmp_path / "elsewhere"))
    assert probe.run_dir() == str(tmp_path / "elsewhere")


def test_probe_import_is_light():
    code = "import sys, harness.probe; print(sorted(m for m in ('torch', 'numpy', 'safetensors') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_step_row(trace_dir):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.AdamW(model.parameters())
    x = torch.randn(5, 4)
    loss = model(x).pow(2).mean()
    loss.backward()
    opt.step()
    probe.step(3, loss=loss, batch={"x": x, "ids": [1, 2]}, model=model, optimizer=opt, lr=0.5, note="a",
               ema=torch.zeros(2))
    start, row = rows(trace_dir)
    assert start["kind"] == "start" and start["pid"] == os.getpid() and start["world_size"] == 2
    assert row["kind"] == "step" and row["step"] == 3 and row["rank"] == 1 and row["attempt"] == 2
    assert row["loss"] == {"dtype": "float32", "hex": struct.pack("<f", loss.item()).hex()}
    assert row["loss_value"] == loss.item()
    assert row["batch"] == digest.digest({"ids": [1, 2], "x": x.clone()})
    assert set(row["rng"]) == {"python", "numpy", "torch", "cuda"} and row["rng"]["cuda"] is None
    assert set(row["params_tensors"]) == {"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                                          "1.running_var", "1.num_batches_tracked"}
    assert row["params"] == digest.combine(row["params_tensors"])
    assert row["optimizer"] == digest.digest(opt.state_dict())
    assert row["extra"] == {"lr": 0.5, "note": "a", "ema": digest.digest(torch.zeros(2))}


def test_python_float_loss_is_float64_bits(trace_dir):
    probe.step(1, loss=0.1)
    assert rows(trace_dir)[-1]["loss"] == {"dtype": "float64", "hex": struct.pack("<d", 0.1).hex()}


def test_rng_digests_follow_each_stream():
    before = state_digest.rng_digests()
    random.random()
    after_python = state_digest.rng_digests()
    np.random.random()
    after_numpy = state_digest.rng_digests()
    torch.rand(1)
    after_torch = state_digest.rng_digests()
    changed = lambda a, b: {k for k in a if a[k] != b[k]}  # noqa: E731
    assert changed(before, after_python) == {"python"}
    assert changed(after_python, after_numpy) == {"numpy"}
    assert changed(after_numpy, after_torch) == {"torch"}
    state = torch.get_rng_state()
    torch.rand(1)
    torch.set_rng_state(state)
    assert state_digest.rng_digests()["torch"] == after_torch["torch"]


def test_wrapped_models_digest_like_the_plain_module():
    model = torch.nn.Linear(3, 2)

    class DistributedDataParallel(torch.nn.Module):  # the unwrapping goes by the wrapper's name and .module
        def __init__(self, module):
            super().__init__()
            self.module = module

    class Compiled(torch.nn.Module):
        def __init__(self, mod):
            super().__init__()
            self._orig_mod = mod

    plain = state_digest.params_digests(model)
    assert state_digest.params_digests(DistributedDataParallel(model)) == plain
    assert state_digest.params_digests(Compiled(DistributedDataParallel(model))) == plain
    assert list(plain[1]) == ["weight", "bias"]


@pytest.mark.parametrize("t", [
    torch.tensor(1.5), torch.zeros(0), torch.ones(3, dtype=torch.bfloat16), torch.tensor([True, False]),
    torch.arange(12.).reshape(3, 4).t(), torch.arange(8.)[3:], torch.randn(3, dtype=torch.complex64).conj(),
    torch.arange(6, dtype=torch.int64).neg()._neg_view(),
])
def test_tensor_bytes_are_the_logical_values(t):
    expected = t.resolve_conj().resolve_neg().contiguous().clone()
    assert bytes(digest.tensor_bytes(t)) == expected.reshape(-1).view(torch.uint8).numpy().tobytes()
    assert digest.tensor_digest(t) == digest.tensor_digest(expected)


def test_tensor_bytes_are_zero_copy_for_contiguous_cpu_tensors():
    import ctypes

    t = torch.randn(1000)[10:]
    buf = digest.tensor_bytes(t)
    assert ctypes.addressof(buf) == t.data_ptr() and len(buf) == t.numel() * 4


def test_digest_covers_dtype_shape_bits_and_keys():
    z = torch.zeros(4)
    d = digest.tensor_digest
    assert d(z) != d(torch.zeros(4, dtype=torch.int32))  # same bytes, other dtype
    assert d(z) != d(z.reshape(2, 2))  # same bytes, other shape
    assert d(z) != d(torch.tensor([0.0, 0.0, 0.0, -0.0]))  # one bit
    assert d(torch.tensor(float("nan"))) == d(torch.tensor(float("nan")))
    assert digest.digest({"a": z, "b": 1}) == digest.digest({"b": 1, "a": z.clone()})  # key order does not matter
    assert digest.digest({"a": z}) != digest.digest({"b": z})  # names do
    assert digest.digest([1, 2]) != digest.digest([2, 1])
    assert digest.digest(1) != digest.digest(1.0) != digest.digest("1") != digest.digest(True)
    assert digest.digest(np.int64(3)) == digest.digest(np.array(3))
    assert digest.digest(np.arange(3)) != digest.digest(np.arange(3).astype(np.int32))


def test_digest_rejects_objects_it_cannot_read_naming_the_key():
    with pytest.raises(digest.DigestError, match=r"object at 'x/\[1\]'"):
        digest.digest({"x": [1, object()]})


def test_bad_arguments_are_clear(trace_dir):
    with pytest.raises(ValueError, match="step must be"):
        probe.step(0)
    with pytest.raises(TypeError, match=r"batch=.*'b'"):
        probe.step(1, batch={"b": object()})
    with pytest.raises(TypeError, match="loss"):
        probe.step(1, loss="high")


def test_point_records_an_event_with_the_last_step(trace_dir):
    probe.point("checkpoint.begin", path="/x")
    probe.step(4)
    probe.point("checkpoint.committed", path="/y", step=4)
    events = [r for r in rows(trace_dir) if r["kind"] == "event"]
    assert [(e["name"], e["step"], e["info"]) for e in events] == [
        ("checkpoint.begin", 0, {"path": "/x"}), ("checkpoint.committed", 4, {"path": "/y", "step": 4})]


def test_finish_writes_every_tensor_and_leaf(trace_dir):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3)).sum().backward()
    opt.step()
    ema = {"w": torch.randn(3, dtype=torch.bfloat16)}
    probe.finish(model=model, optimizer=opt, ema=ema, step=7, name="run", blob=b"\x00\x01", arr=np.arange(3))
    last = rows(trace_dir)[-1]
    assert isinstance(last.pop("time"), float)
    assert last == {"kind": "finish", "attempt": 2, "rank": 1, "file": "final/rank1.safetensors"}
    tensors = load_file(trace_dir / "final" / "rank1.safetensors")
    assert set(tensors) == {"model/weight", "model/bias", "optimizer/state/#0/momentum_buffer",
                            "optimizer/state/#1/momentum_buffer", "extra/ema/w", "extra/arr"}
    assert torch.equal(tensors["model/weight"], model.weight.detach())
    assert tensors["extra/ema/w"].dtype == torch.bfloat16 and torch.equal(tensors["extra/ema/w"], ema["w"])
    leaves = json.loads((trace_dir / "final" / "rank1.json").read_text())
    assert leaves["extra/step"] == 7 and leaves["extra/name"] == "run" and leaves["extra/blob"] == {"bytes": "0001"}
    assert leaves["optimizer/param_groups/[0]/lr"] == 0.1
    assert leaves["optimizer/param_groups/[0]/params/[1]"] == 1


def test_calls_from_a_forked_child_are_ignored(trace_dir):
    probe.step(1)
    pid = os.fork()
    if pid == 0:
        probe.step(2)
        os._exit(0 if not probe.enabled() else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [r.get("step") for r in rows(trace_dir)] == [None, 1]


# -- faults, delivered in a child process ---------------------------------------------------------------
SCRIPT = textwrap.dedent("""
    import signal, sys
    from harness import probe
    if sys.argv[1] == "handler":
        signal.signal(signal.SIGTERM, lambda *a: print("handled SIGTERM", flush=True))
    try:
        for step in range(1, 6):
            probe.step(step)
            for _ in range(2):
                probe.point("save")
    except probe.InjectedFault as e:
        print("caught:", e, flush=True)
        sys.exit(3)
    print("finished", flush=True)
""")


def run_with_fault(tmp_path, fault, mode="plain", rank="0"):
    script = tmp_path / "script.py"
    tmp_path.mkdir(exist_ok=True)
    script.write_text(SCRIPT)
    env = {**os.environ, "HARNESS_TRACE_DIR": str(tmp_path / "trace"), "RANK": rank,
           "HARNESS_FAULT": json.dumps(fault)}
    proc = subprocess.run([sys.executable, str(script), mode], env=env, capture_output=True, text=True, timeout=60)
    with open(tmp_path / "trace" / f"rank{rank}.jsonl") as f:
        return proc, [json.loads(line) for line in f]


def kinds(trace_rows):
    return [(r["kind"], r.get("step"), r.get("name") or r.get("point")) for r in trace_rows if r["kind"] != "start"]


def test_sigkill_at_a_step_after_its_row(tmp_path):
    proc, trace = run_with_fault(tmp_path, {"at": {"step": 2}, "rank": 0, "signal": "SIGKILL"})
    assert proc.returncode == -signal.SIGKILL
    assert kinds(trace) == [("step", 1, None), ("event", 1, "save"), ("event", 1, "save"), ("step", 2, None),
                            ("fault", 2, None)]
    assert trace[-1]["fault"] == {"at": {"step": 2}, "rank": 0, "signal": "SIGKILL"}


def test_sigterm_without_handler_terminates(tmp_path):
    proc, trace = run_with_fault(tmp_path, {"at": {"point": "save", "occurrence": 3}, "rank": "all",
                                            "signal": "SIGTERM"})
    assert proc.returncode == -signal.SIGTERM
    assert kinds(trace)[-2:] == [("event", 2, "save"), ("fault", 2, "save")]


def test_sigterm_with_handler_continues_and_fires_once(tmp_path):
    proc, trace = run_with_fault(tmp_path, {"at": {"step": 2}, "rank": 0, "signal": "SIGTERM"}, mode="handler")
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == ["handled SIGTERM", "finished"]
    assert [r["kind"] for r in trace].count("fault") == 1 and len([r for r in trace if r["kind"] == "step"]) == 5


def test_exception_fault(tmp_path):
    proc, trace = run_with_fault(tmp_path, {"at": {"point": "save", "occurrence": 1}, "rank": 0,
                                            "signal": "exception"})
    assert proc.returncode == 3
    assert "caught: resume-harness: injected fault save:exception on rank 0 at point 'save'" in proc.stdout
    assert issubclass(probe.InjectedFault, RuntimeError)


def test_fault_for_another_rank_does_not_fire(tmp_path):
    proc, trace = run_with_fault(tmp_path, {"at": {"step": 2}, "rank": 1, "signal": "SIGKILL"})
    assert proc.returncode == 0 and "fault" not in [r["kind"] for r in trace]
    proc, trace = run_with_fault(tmp_path / "r1", {"at": {"step": 2}, "rank": 1, "signal": "SIGKILL"}, rank="1")
    assert proc.returncode == -signal.SIGKILL


def test_non_finite_floats_are_recorded_by_their_bits(trace_dir):
    """NaN payloads and signs survive: a NaN with another payload is another value."""
    quiet = struct.unpack("<d", bytes.fromhex("010000000000f87f"))[0]  # NaN, payload 1
    probe.step(1, loss=quiet, x=quiet, y=float("-inf"))
    row = rows(trace_dir)[-1]
    assert row["extra"]["x"] == {"float64": "7ff8000000000001"}
    assert row["extra"]["y"] == {"float64": "fff0000000000000"}
    assert row["loss"] == {"dtype": "float64", "hex": "010000000000f87f"} and row["loss_value"] is None
    probe.finish(z=quiet)
    leaves = json.loads((trace_dir / "final" / "rank1.json").read_text())
    assert leaves["extra/z"] == {"float64": "7ff8000000000001"}


def test_rows_are_written_as_row_to_json_writes_them():
    """The recorder encodes rows without row_to_json's deep copy: same JSON for every row kind."""
    from dataclasses import fields as dc_fields

    from harness.trace_schema import ROW_TYPES, row_to_json

    sample = {int: 3, float: 1.5, str: "x", dict: {"a": [1, {"b": None}]}, list: [{"lr": 0.1}]}
    for cls in ROW_TYPES.values():
        kwargs = {}
        for f in dc_fields(cls):
            if f.init:
                kind = next((t for t in sample if t.__name__ in str(f.type)), str)
                kwargs[f.name] = sample[kind]
        row = cls(**kwargs)
        assert json.dumps(recorder._row_json(row)) == json.dumps(row_to_json(row)), cls.__name__
