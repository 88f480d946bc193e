"""What a trial in auto mode (``harness.probe.auto``: no probe calls) gets from its baseline: the per-step digest
index a resumed rank matches what it restored against, and the list of what auto mode does not record."""

from __future__ import annotations

import os


def write_auto_index(base_trace, path: str) -> str:
    """Auto mode's baseline index at ``path``: per rank, per step (0 = the initial state), the parameter
    digests (buffers left out) and the optimizer-state digests, which a resumed rank matches against
    what it restored (harness.probe.auto). ``base_trace``: the baseline's Trace."""
    import json

    index: dict = {}
    for r in base_trace.ranks:
        steps = index.setdefault(str(r), {})
        try:
            with open(os.path.join(base_trace.path, "auto", f"rank{r}.json")) as f:
                initial = json.load(f)["initial"]
            steps["0"] = {"params": initial["params"], "state": initial["state"]}
        except (OSError, ValueError, KeyError):
            pass
        for row in base_trace.steps(r):
            params = {n: d for n, d in (row.params_tensors or {}).items() if not n.endswith(" (buffer)")}
            steps.setdefault(str(row.step), {"params": params, "state": row.optimizer_state or {}})
    with open(path + ".tmp", "w") as f:
        json.dump(index, f)
    os.replace(path + ".tmp", path)
    return path


#: What auto mode does not record that the probe would (harness.probe.auto.NOT_RECORDED; named here
#: because engine/ does not import probe/).
AUTO_NOT_RECORDED = (
    "extra values (probe.step(**extra): an EMA, counters, a scheduler's own state)",
    "parameters no optimizer steps (frozen ones), per step; they are in the final state",
    "final state outside the model, the optimizers and torch.optim.swa_utils.AveragedModel instances "
    "(schedulers, custom objects; a module no optimizer steps, such as a hand-made EMA, is named by the event "
    "auto.unseen)",
)


def auto_not_recorded(base_trace) -> list[str]:
    """``compared["not_recorded"]`` of an auto-mode trial: the fixed list, plus the loss or the batch when
    the baseline never saw one (no backward call, no torch DataLoader)."""
    rows = [row for r in base_trace.ranks for row in base_trace.steps(r)]
    out = []
    if rows and all(row.loss is None for row in rows):
        out.append("loss (no backward call seen: torch.autograd.grad, or a loss computed elsewhere)")
    if rows and all(row.batch is None for row in rows):
        out.append("batch (no torch.utils.data.DataLoader batch was followed by a backward call)")
    return out + list(AUTO_NOT_RECORDED)
