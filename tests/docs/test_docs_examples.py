"""The docs' code examples work: every Python block compiles, the blocks marked ``<!-- docs-test: run -->``
run (cheap ones: imports and API calls that launch no job), and every ``harness ...`` command shown in a
console or shell block names a real command and only options that command's ``--help`` lists."""

from __future__ import annotations

import re
import shlex

import pytest

from docs_pages import ROOT, all_blocks, hooks

BLOCKS = all_blocks()
PYTHON = [b for b in BLOCKS if b.lang == "python" and b.mark != "skip"]
RUNNABLE = [b for b in PYTHON if b.mark == "run"]
SHELL = [b for b in BLOCKS if b.lang in ("console", "bash", "sh", "shell") and b.mark != "skip"]


@pytest.mark.parametrize("block", PYTHON, ids=lambda b: b.id)
def test_python_example_compiles(block):
    compile(block.text, block.id, "exec")


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.id)
def test_runnable_python_example_runs(block, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)  # examples name repository files by relative path
    monkeypatch.setenv("HARNESS_RUN_DIR", str(tmp_path))
    exec(compile(block.text, block.id, "exec"), {"__name__": "__docs_example__"})


def test_there_are_runnable_examples():
    assert len(RUNNABLE) >= 5, [b.id for b in RUNNABLE]


def harness_commands(block) -> list[tuple[str, list[str]]]:
    """(where, argv after `harness`) of each harness command line in a console/shell block."""
    out = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        while line.endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line[:-1] + " " + lines[i].strip()
        i += 1
        text = line.strip()
        if block.lang == "console":
            if not text.startswith(("$ harness ", "replay: harness ")):
                continue
            text = text.split("harness ", 1)[1]
        elif text.startswith("harness "):
            text = text[len("harness "):]
        elif " && harness " in text or text.endswith("&& harness"):
            text = text.rsplit("&& harness", 1)[1]
        else:
            continue
        out.append((f"{block.id}: harness {text}", shlex.split(text, comments=True)))
    return out


COMMANDS = [c for b in SHELL for c in harness_commands(b)]


def test_the_docs_show_every_command():
    shown = {argv[0] for _, argv in COMMANDS if argv}
    top = hooks().cli_help("harness")
    listed = set(re.findall(r"^    (\w+)", top, re.M))
    assert {"run", "scenarios", "certify", "fuzz", "repro", "convert", "inspect", "diff"} <= listed, listed
    assert listed <= shown, f"no docs example of: {sorted(listed - shown)}"


@pytest.mark.parametrize("where,argv", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_harness_command_uses_real_options(where, argv):
    h = hooks()
    commands = re.findall(r"^    (\w+)", h.cli_help("harness"), re.M)
    if not argv:  # `harness` alone
        return
    command = argv[0]
    assert command in commands, f"{where}: no command {command!r} (harness --help lists {commands})"
    usage = h.cli_help(command)
    options = set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", usage))
    used = []
    for token in argv[1:]:
        if token == "--":  # the script's own arguments follow
            break
        if token.startswith("--"):
            used.append(token.split("=", 1)[0])
    unknown = [o for o in used if o not in options]
    assert not unknown, f"{where}: {unknown} not in `harness {command} --help`"


def synopses() -> list[tuple[str, str, str]]:
    """(where, command, text) of each synopsis: a ```text block line `harness COMMAND ...` and the indented
    lines that continue it."""
    out = []
    for block in BLOCKS:
        if block.lang != "text":
            continue
        current = None
        for line in block.text.splitlines():
            if line.startswith("harness "):
                current = [line]
                out.append((f"{block.id}: {line.split('[')[0].strip()}", line.split()[1], current))
            elif current is not None and line.startswith(" ") and line.strip().startswith("["):
                current.append(line)
            else:
                current = None
    return [(where, command, "\n".join(lines)) for where, command, lines in out]


SYNOPSES = synopses()


def test_the_cli_pages_give_a_synopsis_of_each_big_command():
    assert {"run", "fuzz", "certify", "repro"} <= {command for _, command, _ in SYNOPSES}


@pytest.mark.parametrize("where,command,text", SYNOPSES, ids=[w for w, _, _ in SYNOPSES])
def test_synopsis_names_only_real_options(where, command, text):
    usage = hooks().cli_help(command)
    options = set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", usage))
    unknown = sorted(set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", text)) - options)
    assert not unknown, f"{where}: {unknown} not in `harness {command} --help`"
