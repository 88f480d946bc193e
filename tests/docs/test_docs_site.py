"""The documentation site builds strictly, its generated parts come from the code, and the README stays a
two-minute read whose links all resolve."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
import typing

import pytest

from docs_pages import DOCS, ROOT, hooks, pages, render, source


def test_the_site_builds_strictly(tmp_path):
    """What CI runs (`mkdocs build --strict`): any warning (a broken link or anchor, a page not in the
    nav) fails; the generated parts are in the built pages and the hook file is not published."""
    for module in ("mkdocs", "material"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: pip install -e '.[docs]' (the test extra has it)")
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    # never --quiet: it hides the warnings that --strict counts, and the build then passes with them
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site),
                           "--config-file", str(ROOT / "mkdocs.yml")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    from harness.oracle.verdict import Outcome

    outcomes = (site / "outcomes" / "index.html").read_text()
    assert all(f"<code>{o.value}</code>" in outcomes for o in Outcome)
    assert "usage: harness run" in (site / "cli" / "run" / "index.html").read_text()
    assert "ExpectedDivergence" in (site / "repro-format" / "index.html").read_text()
    assert not (site / "hooks.py").exists()
    assert "\\|" not in (site / "pytest" / "index.html").read_text()  # `str \| None` of a table shows as `str | None`


def test_every_generated_part_is_filled():
    """Every marked part of every page generates (the hook fails the build on an unknown one)."""
    marked = 0
    for page in pages():
        text = source(page)
        names = re.findall(r"<!-- ([a-z][a-z0-9:-]*):begin -->", text)
        marked += len(names)
        rendered = render(page)
        for name in names:
            def body(text):
                return text.split(f"<!-- {name}:begin -->\n", 1)[1].split(f"<!-- {name}:end -->", 1)[0]
            assert body(rendered).strip(), (page, name)
            if name not in hooks().KEPT_AS_TEXT:  # the source holds a pointer, the site the generated text
                assert body(rendered) != body(text), (page, name)
    assert marked >= 10


def test_an_unknown_or_unclosed_part_fails_naming_the_page():
    h = hooks()
    with pytest.raises(h.GenerationError, match=r"x\.md: unknown generated part 'nope'"):
        h.fill("<!-- nope:begin -->\n\n<!-- nope:end -->\n", "x.md")
    with pytest.raises(h.GenerationError, match=r"x\.md: .*\['outcomes'\] have no matching"):
        h.fill("<!-- outcomes:begin -->\n", "x.md")


def test_table_code_spans_show_a_pipe_where_github_needs_it_escaped():
    h = hooks()
    assert h.table_code_pipes("| `str \\| None` | a \\| b |\ntext `x \\| y`") == "| `str | None` | a \\| b |\ntext `x \\| y`"


def test_the_repro_schema_is_generated_from_the_code():
    """Every field of Repro and of the dataclasses nested in it is in the page, whatever fields the code
    has today (the generator walks dataclasses.fields)."""
    from harness.repro import schema

    text = render("repro-format.md")
    todo, seen = [schema.Repro], set()
    while todo:
        cls = todo.pop()
        seen.add(cls)
        assert f"`{cls.__module__}.{cls.__qualname__}`" in text
        for f in dataclasses.fields(cls):
            assert f"| `{f.name}` |" in text, (cls.__name__, f.name)
        hints = typing.get_type_hints(cls)
        todo += [c for f in dataclasses.fields(cls) for c in hooks().nested_dataclasses(hints[f.name]) if c not in seen]
    assert len(seen) >= 3


def test_the_readme_is_a_two_minute_read_with_working_links():
    readme = source("README.md")
    assert len(readme.splitlines()) <= 300
    assert "MkDocs" in readme and "Material" in readme and "mkdocs build --strict" in readme
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [link.split("#")[0] for link in links if not re.match(r"[a-z]+:", link) and not link.startswith("#")]
    missing = sorted({link for link in local if link and not (ROOT / link).exists()})
    assert not missing, f"README.md links to missing files: {missing}"
    linked = {os.path.normpath(link) for link in local}
    for page in ("docs/getting-started.md", "docs/cli/run.md", "docs/outcomes.md", "docs/checkpointer.md",
                 "docs/accelerate.md", "docs/repro-format.md", "docs/pytest.md", "docs/multinode.md",
                 "docs/benchmarks.md", "docs/design.md", "docs/auto-mode.md", "docs/corpus.md"):
        assert page in linked, f"README.md does not link {page}"


def test_every_page_is_in_the_nav():
    """Also a strict-build warning; checked here without mkdocs installed."""
    config = (ROOT / "mkdocs.yml").read_text()
    in_nav = set(re.findall(r":\s*([\w/.-]+\.md)\s*$", config, re.M))
    assert in_nav == {p for p in pages() if p != "README.md"}, in_nav ^ {p for p in pages() if p != "README.md"}


def test_ci_builds_the_docs_strictly_before_the_tests():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    build = next(i for i, line in enumerate(ci) if line.startswith("mkdocs build --strict") or
                 "-m mkdocs build --strict" in line)
    assert build < ci.index("python -m pytest -n auto")
    assert "--site-dir" in ci[build]
    assert "--quiet" not in ci[build] and "-q " not in ci[build]  # --quiet hides the warnings --strict counts
    workflow = (ROOT / "ci" / "github-actions.yml").read_text()
    assert "mkdocs build --strict" in workflow
    assert re.search(r"^/?site/$", (ROOT / ".gitignore").read_text(), re.M)


def test_docs_hook_is_not_a_page_and_no_docs_file_is_stray():
    assert (DOCS / "hooks.py").exists() and "exclude_docs" in (ROOT / "mkdocs.yml").read_text()
    strays = [p for p in DOCS.rglob("*") if p.is_file() and p.suffix not in (".md", ".png", ".py")
              and "__pycache__" not in p.parts]
    assert not strays, strays
