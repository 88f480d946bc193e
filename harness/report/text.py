"""Human rendering of a RunResult with rich: what was compared, the verdict, the first divergence,
warnings, the log tail of a crash, and the command that replays the trial."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.oracle.trace import event_step

STYLES = {"pass": "bold green", "fail": "bold red", "error": "bold yellow"}
MAX_TENSORS = 10
MAX_LOG_LINES = 40


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _attempt(s: dict) -> str:
    steps = f"steps {s['first_step']}-{s['last_step']}" if s.get("first_step") is not None else "no steps"
    parts = [f"{s['attempt']}: {steps}"]
    loaded = [event_step(e) for e in s.get("loaded") or []]
    if loaded:
        parts.insert(1, f"resumed from step {loaded[0]}")
    if s.get("fault"):
        f = s["fault"]
        sig = (f.get("fault") or {}).get("signal", "fault")
        at = f"at {f['point']}, " if f.get("point") else ""
        parts.append(f"{sig} {at}after step {f.get('step')}")
    if s.get("finished"):
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
    if c:
        t.add_row("ranks / steps", f"{c.get('ranks', 0)} / {c.get('steps', 0)}")
        t.add_row("step rows", f"{c.get('rows', 0)} ({c.get('reexecuted_rows', 0)} re-executed after a resume)")
        t.add_row("fields", Text(", ".join(c.get("fields", [])) or "-"))
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


def render_text(result, console: Console | None = None) -> Console:
    """Print the report of `result` on `console` (stdout by default) and return the console."""
    console = console or Console()
    console.print(_compared_table(result))
    line = Text()
    line.append(f" {result.verdict.upper()} ", style=STYLES.get(result.verdict, "bold") + " reverse")
    line.append(f" {result.outcome}: ", style="bold")
    line.append(result.message)
    console.print(line)
    d = result.first_divergence
    if d is not None:
        head = "final state" if d.where == "final" else f"step {d.step}"
        console.print(Text.assemble(("first divergence: ", "bold"), f"{head}, rank {d.rank}, attempt {d.attempt}; ",
                                    ("fields: ", "bold"), (", ".join(d.fields), "red")))
        if d.note:
            console.print(Text(f"  {d.note}"))
        if d.tensors:
            console.print(_tensor_table(d.tensors))
    for w in result.warnings or []:
        console.print(Text.assemble(("warning: ", "yellow"), w))
    if result.log_tail:
        lines = result.log_tail.rstrip("\n").splitlines()[-MAX_LOG_LINES:]
        console.print(Text("log tail:", style="bold"))
        console.print(Text("\n".join(f"  | {ln}" for ln in lines)))
    if result.replay:
        console.print(Text.assemble(("replay: ", "bold"), result.replay))
    if result.out_dir:
        console.print(Text.assemble(("files: ", "bold"), str(result.out_dir)))
    return console
