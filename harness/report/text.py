"""Human rendering of a RunResult with rich: what was compared, the verdict, the first divergence,
warnings, the log tail of a crash, and the command that replays the trial."""

from __future__ import annotations

import re

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.oracle.outcome import VerdictKind

STYLES = {VerdictKind.PASS: "bold green", VerdictKind.FAIL: "bold red", VerdictKind.ERROR: "bold yellow"}
MAX_TENSORS = 10
MAX_LOG_LINES = 40


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _attempt(s) -> str:
    steps = f"steps {s.first_step}-{s.last_step}" if s.first_step is not None else "no steps"
    parts = [f"{s.attempt}: {steps}"]
    if s.resumed_from is not None:
        parts.insert(1, f"resumed from step {s.resumed_from}")
    if s.fault is not None:
        f = s.fault
        sig = (f.fault or {}).get("signal", "fault") if isinstance(f.fault, dict) else "fault"
        at = f"at {f.point}, " if f.point else ""
        parts.append(f"{sig} {at}after step {f.step}")
    if s.finished:
        parts.append("finished")
    return ", ".join(parts)


def _num(x) -> str:
    if x is None:
        return "-"
    return repr(x) if isinstance(x, float) else str(x)  # shortest repr that round-trips: exact


def _compared_table(result) -> Table:
    c = result.compared or {}
    t = Table(box=box.SIMPLE, show_header=False, title="compared", title_justify="left", pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("run", Text(f"{result.target}  nproc={result.nproc} backend={result.backend} seed={result.seed}"))
    if result.plan:
        t.add_row("plan", Text(str(result.plan)))
    elastic = c.get("elastic") if isinstance(c.get("elastic"), dict) else None
    if elastic and "exact" in elastic:  # harness.oracle.elastic: what is exact, what is measured
        sizes = elastic.get("world_sizes") or []
        t.add_row("world sizes", Text(" -> ".join(map(str, sizes)) + f" (resumed at step(s) {elastic.get('resumed_at')})"))
        t.add_row("exact", Text(", ".join(elastic["exact"])))
        t.add_row("not exact", Text(", ".join(elastic.get("not_exact", []))))
        t.add_row("loss deviation", Text(f"max rel {_num(elastic.get('loss_max_rel'))}, max abs "
                                         f"{_num(elastic.get('loss_max_abs'))} (rtol {_num(elastic.get('loss_rtol'))})"))
        if elastic.get("rng"):
            t.add_row("RNG", Text(str(elastic["rng"])))
    elif c:
        t.add_row("ranks / steps", f"{c.get('ranks', 0)} / {c.get('steps', 0)}")
        t.add_row("step rows", f"{c.get('rows', 0)} ({c.get('reexecuted_rows', 0)} re-executed after a resume)")
        t.add_row("fields", Text(", ".join(c.get("fields", [])) or "-"))
        if c.get("not_recorded"):
            t.add_row("not recorded", Text(", ".join(map(str, c["not_recorded"])) + " (auto mode cannot see them)"))
        if c.get("unused_rng"):
            t.add_row("not compared", Text(", ".join(c["unused_rng"]) + " (unused: never drawn from in the baseline)"))
        t.add_row("final state", f"{c.get('final_tensors', 0)} tensors ({_size(c.get('final_bytes', 0))}), "
                                 f"{c.get('final_leaves', 0)} JSON leaves")
    for i, s in enumerate(result.attempts or []):
        t.add_row("attempts" if i == 0 else "", Text(_attempt(s)))
    return t


def _tensor_table(tensors) -> Table:
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    t.add_column("tensor", overflow="fold", min_width=min(40, max(len(d.name) for d in tensors[:MAX_TENSORS])))
    t.add_column("dtype", no_wrap=True)
    t.add_column("shape", overflow="fold")
    for col in ("n_diff", "max |diff|", "max ULP"):
        t.add_column(col, justify="right", no_wrap=True)
    t.add_column("note", overflow="fold")
    for d in tensors[:MAX_TENSORS]:
        t.add_row(Text(d.name), Text(d.dtype or "-"), Text(str(d.shape) if d.shape is not None else "-"),
                  _num(d.n_diff), _num(d.max_abs_diff), _num(d.max_ulp), Text(d.note or ""))
    if len(tensors) > MAX_TENSORS:
        t.add_row(Text(f"... and {len(tensors) - MAX_TENSORS} more"), "", "", "", "", "", "")
    return t


#: Width of the report when the output is not a terminal (CI logs, files): wide enough that tables are
#: never squeezed; lines that must stay whole (verdict, replay) are never wrapped at any width.
NO_TTY_WIDTH = 400


class _NoTrailingSpace:
    """A text stream that drops the spaces rich pads lines with (table cells fill their column), so that piped
    output (CI logs, files) has no trailing whitespace. Spaces at the end of a write are held back until the
    next write shows whether a line break follows them."""

    _PAD = re.compile(r"[ \t]+((?:\x1b\[[0-9;]*m)*)(?=\n)")  # spaces before a newline (and any style reset)

    def __init__(self, stream):
        self._stream, self._held = stream, ""

    def write(self, text: str) -> int:
        whole = self._held + text
        body = whole.rstrip(" \t")
        self._held = whole[len(body):]
        self._stream.write(self._PAD.sub(r"\1", body))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name):  # encoding, fileno, ...: the stream's own
        return getattr(self._stream, name)


def make_console(file=None, stderr: bool = False) -> Console:
    """A rich Console for the report: a terminal's own width; else NO_TTY_WIDTH columns, lines not padded."""
    import sys

    stream = file or (sys.stderr if stderr else sys.stdout)
    isatty = getattr(stream, "isatty", lambda: False)()
    if isatty:
        return Console(file=stream, stderr=stderr)
    return Console(file=_NoTrailingSpace(stream), stderr=stderr, width=NO_TTY_WIDTH)


def _determinism_line(result) -> str | None:
    """The GPU determinism settings of the trial's first rank (its first start row), for a GPU run only."""
    import json
    import os

    path = os.path.join(str(result.out_dir or ""), "trace", "rank0.jsonl")
    try:
        with open(path) as f:
            state = json.loads(f.readline()).get("determinism")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(state, dict) or not (state.get("cuda") or result.backend == "nccl"):
        return None
    return (f"torch.use_deterministic_algorithms={state.get('deterministic_algorithms')}, "
            f"CUBLAS_WORKSPACE_CONFIG={state.get('cublas_workspace_config') or 'unset'}, "
            f"cudnn.deterministic={state.get('cudnn_deterministic')}, cudnn.benchmark={state.get('cudnn_benchmark')}")


def render_text(result, console: Console | None = None) -> Console:
    """Print the report of `result` on `console` (stdout by default) and return the console."""
    console = console or make_console()
    console.print(_compared_table(result))
    if (determinism := _determinism_line(result)) is not None:
        console.print(Text.assemble(("determinism: ", "bold"), determinism), soft_wrap=True)
    line = Text()
    line.append(f" {result.verdict.upper()} ", style=STYLES.get(result.verdict, "bold") + " reverse")
    line.append(f" {result.outcome}: ", style="bold")
    line.append(result.message)
    console.print(line, soft_wrap=True)  # one line, however long: grep-able in CI logs
    if getattr(result, "hint", None):
        console.print(Text.assemble(("check: ", "bold"), result.hint), soft_wrap=True)
    d = result.first_divergence
    rng = getattr(result, "rng_divergence", None)
    training = d if d is not None and any(not f.startswith("rng:") for f in d.fields) else None
    for label, div, diagnosis in (("first training divergence", training, getattr(result, "diagnosis", None)),
                                  ("first RNG divergence", rng, getattr(result, "rng_diagnosis", None))):
        if div is None and not (label.endswith("training divergence") and d is not None and rng is None):
            continue
        div = div or d
        if label.startswith("first RNG") and div is training:  # the same row: name its streams, its cause if new
            streams = ", ".join(f for f in div.fields if f.startswith("rng:"))
            console.print(Text.assemble((f"{label}: ", "bold"), f"the same step ({streams})"))
            shown = {c.cause for c in [getattr(result, "diagnosis", None), *getattr(getattr(result, "diagnosis", None), "also", ())] if c}
            if diagnosis is not None and diagnosis.cause not in shown:
                console.print(Text.assemble(("  likely cause: ", "bold"), (diagnosis.cause, "bold magenta"), " - ",
                                            diagnosis.summary), soft_wrap=True)
            continue
        head = {"final": "final state", "artefact": "exported file"}.get(div.where, f"step {div.step}")
        console.print(Text.assemble((f"{label}: ", "bold"), f"{head}, rank {div.rank}, attempt {div.attempt}; ",
                                    ("fields: ", "bold"), (", ".join(div.fields), "red")))
        if div.note:
            console.print(Text(f"  {div.note}"))
        if div.tensors and label.endswith("training divergence"):
            console.print(_tensor_table(div.tensors))
        if diagnosis is not None:
            console.print(Text.assemble(("  likely cause: ", "bold"), (diagnosis.cause, "bold magenta"), " - ",
                                        diagnosis.summary), soft_wrap=True)
            console.print(Text.assemble(("    evidence: ", "bold"), diagnosis.evidence), soft_wrap=True)
            for other in getattr(diagnosis, "also", ()) or ():
                console.print(Text.assemble(("  also: ", "bold"), (other.cause, "magenta"), " - ", other.evidence),
                              soft_wrap=True)
    if d is None and getattr(result, "diagnosis", None) is not None:
        diagnosis = result.diagnosis
        console.print(Text.assemble(("likely cause: ", "bold"), (diagnosis.cause, "bold magenta"), " - ",
                                    diagnosis.summary), soft_wrap=True)
        console.print(Text.assemble(("  evidence: ", "bold"), diagnosis.evidence), soft_wrap=True)
    for w in result.warnings or []:
        console.print(Text.assemble(("warning: ", "yellow"), w), soft_wrap=True)
    if result.log_tail:
        lines = result.log_tail.rstrip("\n").splitlines()[-MAX_LOG_LINES:]
        console.print(Text("log tail:", style="bold"))
        console.print(Text("\n".join(f"  | {ln}" for ln in lines)))
    if result.replay:
        console.print(Text.assemble(("replay: ", "bold"), result.replay), soft_wrap=True)
    if result.out_dir:
        console.print(Text.assemble(("files: ", "bold"), str(result.out_dir)), soft_wrap=True)
    return console
