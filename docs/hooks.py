"""MkDocs hook: fill the generated parts of the docs from the code at build time.

A page marks a generated part with a pair of HTML comments::

    <!-- outcomes:begin -->
    (anything: replaced when the site is built)
    <!-- outcomes:end -->

``fill(markdown)`` replaces what is between each pair with what the code says today, so the built site
cannot drift from the code. The parts (``GENERATORS``):

- ``outcomes``: the outcome table (outcome, verdict, exit code, meaning) from ``harness.report.outcomes``;
- ``repro-schema``: the repro file's schema, from ``harness.repro.schema``: the annotated TOML of its
  docstring and a table of the fields of ``Repro`` and of every dataclass nested in it (through
  ``dataclasses.fields``, so a field added to the code shows up here without an edit);
- ``cli-help:COMMAND``: the ``--help`` text of ``harness COMMAND`` (``cli-help:harness``: of ``harness``),
  through the console script's entry point ``harness.cli.main``.

The hook also shows ``\\|`` inside a code span of a table as ``|`` (``table_code_pipes``): GitHub needs the
escape, Python-Markdown shows it.

An unknown name, or a begin marker without its end, is an error naming the page, so ``mkdocs build
--strict`` fails rather than publish a page with a hole. The outcome table is also kept as text in
``docs/outcomes.md`` (for readers on GitHub); ``python docs/hooks.py --write`` rewrites that copy in
place, and ``tests/harness/report/test_outcomes.py`` checks that copy.

This file is a build tool, not part of the package: ``mkdocs.yml`` names it under ``hooks:`` and
excludes it from the site; the tests load it by path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import sys
import typing
from pathlib import Path

DOCS = Path(__file__).resolve().parent

MARKER = re.compile(r"<!-- (?P<name>[a-z][a-z0-9-]*(?::[a-z0-9-]+)?):begin -->\n(?P<body>.*?)<!-- (?P=name):end -->",
                    re.S)
BEGIN = re.compile(r"<!-- ([a-z][a-z0-9-]*(?::[a-z0-9-]+)?):begin -->")


class GenerationError(ValueError):
    """A marked part that cannot be generated (unknown name, missing end marker)."""


# ------------------------------------------------------------------------------------------- generators


def outcomes() -> str:
    from harness.report.outcomes import outcome_markdown

    return outcome_markdown()


def _type_name(tp) -> str:
    """A field's type as written in the code (``str | None``, ``tuple[str, ...]``), from its annotation."""
    if isinstance(tp, str):
        return tp
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    text = str(tp).replace("typing.", "").replace("NoneType", "None")
    return re.sub(r"\b(?:[a-z_]\w*\.)+([A-Z]\w*)", r"\1", text)  # harness.repro.schema.Script -> Script


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return f"`{f.default!r}`"
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f"`{f.default_factory()!r}`"  # type: ignore[misc]
    return "required"


def nested_dataclasses(tp) -> list[type]:
    """The dataclasses a resolved annotation refers to (``Script``, ``Script | None``, ``tuple[Spec, ...]``)."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return [tp]
    return [c for a in typing.get_args(tp) for c in nested_dataclasses(a)]


def dataclass_tables(root: type) -> str:
    """One Markdown table per dataclass reachable from ``root``: field, type, default, and the field's
    ``metadata["doc"]`` where the code gives one. Tolerant: any field, any nesting; an annotation that
    cannot be resolved is shown as written."""
    seen: list[type] = []
    todo = [root]
    out = []
    while todo:
        cls = todo.pop(0)
        if cls in seen:
            continue
        seen.append(cls)
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # an annotation naming something not importable here: show the text
            hints = {}
        doc = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        out.append(f"**`{cls.__module__}.{cls.__qualname__}`**: {doc}\n")
        fields = dataclasses.fields(cls)
        documented = any(f.metadata.get("doc") for f in fields)
        out.append("| field | type | default |" + (" meaning |" if documented else "")
                   + "\n|---|---|---|" + ("---|" if documented else ""))
        for f in fields:
            tp = hints.get(f.name, f.type)
            row = f"| `{f.name}` | `{_type_name(tp)}` | {_default(f)} |".replace(" | None`", " \\| None`")
            if documented:
                row += " " + str(f.metadata.get("doc", "")).replace("|", "\\|").replace("\n", " ") + " |"
            out.append(row)
            todo += [c for c in nested_dataclasses(tp) if c not in seen]
        out.append("")
    return "\n".join(out).rstrip()


def _literal_block(doc: str) -> str | None:
    """The indented block after the first line of ``doc`` that ends with ``::`` (reST literal block)."""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if line.rstrip().endswith("::"):
            block = []
            for rest in lines[i + 1:]:
                if rest.strip() and not rest.startswith((" ", "\t")):
                    break
                block.append(rest)
            text = "\n".join(block).strip("\n")
            if text:
                indent = min(len(x) - len(x.lstrip()) for x in text.splitlines() if x.strip())
                return "\n".join(x[indent:] for x in text.splitlines())
    return None


def repro_schema() -> str:
    from harness.repro import schema

    parts = []
    toml = _literal_block(schema.__doc__ or "")
    if toml:
        parts.append("The file, field by field (from the docstring of `harness/repro/schema.py`):\n")
        parts.append(f"```toml\n{toml}\n```\n")
    version = getattr(schema, "SCHEMA_VERSION", None)
    parts.append(f"The Python side (`harness.repro.Repro` and its parts; schema version {version}), from "
                 "the dataclasses' fields:\n")
    parts.append(dataclass_tables(schema.Repro))
    return "\n".join(parts)


def cli_help(command: str) -> str:
    """``harness COMMAND --help`` as the console script prints it (``command == "harness"``: ``harness --help``)."""
    from harness.cli import main

    argv = ["--help"] if command == "harness" else [command, "--help"]
    buf = io.StringIO()
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "110"  # argparse wraps to $COLUMNS: the same text on every machine
    try:
        with contextlib.redirect_stdout(buf):
            try:
                code = main(argv)
            except SystemExit as e:
                code = e.code
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    text = buf.getvalue().rstrip()
    if code not in (0, None) or not text:
        raise GenerationError(f"`harness {' '.join(argv)}` exited {code} with no help text")
    return f"```text\n$ harness {' '.join(argv)}\n{text}\n```"


GENERATORS = {"outcomes": outcomes, "repro-schema": repro_schema}


def generate(name: str) -> str:
    if name.startswith("cli-help:"):
        return cli_help(name.split(":", 1)[1])
    if name not in GENERATORS:
        raise GenerationError(f"unknown generated part {name!r} (known: {', '.join(GENERATORS)}, cli-help:COMMAND)")
    return GENERATORS[name]()


def fill(markdown: str, page: str = "<page>", only: frozenset[str] | None = None) -> str:
    """``markdown`` with every marked part (every one named in ``only``) replaced by its generated text."""
    begins = BEGIN.findall(markdown)
    found = [m.group("name") for m in MARKER.finditer(markdown)]
    if sorted(begins) != sorted(found):
        missing = sorted(set(begins) - set(found)) or begins
        raise GenerationError(f"{page}: generated part(s) {missing} have no matching '<!-- NAME:end -->' marker")

    def replace(m: re.Match) -> str:
        if only is not None and m.group("name") not in only:
            return m.group(0)
        try:
            body = generate(m.group("name"))
        except GenerationError as e:
            raise GenerationError(f"{page}: {e}") from None
        return f"<!-- {m.group('name')}:begin -->\n{body}\n<!-- {m.group('name')}:end -->"

    return MARKER.sub(replace, markdown)


def render(page: str) -> str:
    """The Markdown of a page (a path relative to ``docs/``, or ``README.md``) as the site shows it."""
    path = DOCS.parent / page if page == "README.md" else DOCS / page
    return fill(path.read_text(encoding="utf-8"), page)


# ------------------------------------------------------------------------------------------- MkDocs


CODE_SPAN = re.compile(r"`[^`\n]*`")


def table_code_pipes(markdown: str) -> str:
    """``\\|`` inside a code span of a table row, as ``|``. GitHub needs the escape there (a bare ``|`` ends
    the cell); Python-Markdown does not split cells inside code spans and would show the backslash."""
    def row(line: str) -> str:
        if not line.lstrip().startswith("|"):
            return line
        return CODE_SPAN.sub(lambda m: m.group(0).replace("\\|", "|"), line)

    return "\n".join(row(line) for line in markdown.split("\n"))


def on_page_markdown(markdown, page, config, files):  # noqa: ARG001 - MkDocs' hook signature
    return table_code_pipes(fill(markdown, page.file.src_path))


# ------------------------------------------------------------------------------------------- --write


#: The parts whose generated text is also kept in the page's source (for readers on GitHub). The others
#: (the repro schema, the --help texts) change with code others are editing: the source holds only a pointer.
KEPT_AS_TEXT = frozenset({"outcomes"})


def write_all() -> list[str]:
    """Rewrite the parts of docs/**/*.md kept as text (``KEPT_AS_TEXT``) in place; the pages changed."""
    changed = []
    for path in sorted(DOCS.rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        new = fill(text, str(path.relative_to(DOCS)), only=KEPT_AS_TEXT)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(str(path.relative_to(DOCS.parent)))
    return changed


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python docs/hooks.py --write   (rewrite the generated parts kept as text in docs/**/*.md)")
    for p in write_all():
        print(f"rewrote {p}")
