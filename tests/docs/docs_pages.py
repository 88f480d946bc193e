"""The documentation's pages and code blocks, for the docs tests (and the tests that read a page).

``hooks()`` loads ``docs/hooks.py`` (the MkDocs hook that fills the generated parts) by path: it is a
build tool, not part of the package. ``render(page)`` is a page as the site shows it.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


@lru_cache(maxsize=1)
def hooks():
    spec = importlib.util.spec_from_file_location("resume_harness_docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render(page: str) -> str:
    """A page (relative to docs/, or "README.md") with its generated parts filled, as the site shows it."""
    return hooks().render(page)


def pages() -> list[str]:
    """Every Markdown page of the site (relative to docs/), and README.md."""
    return sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")) + ["README.md"]


def source(page: str) -> str:
    return (ROOT / page if page == "README.md" else DOCS / page).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    mark: str | None  # "run" or "skip": the <!-- docs-test: ... --> comment just above the fence
    text: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```\s*$", re.M | re.S)
MARK = re.compile(r"<!-- docs-test: (run|skip) -->\s*$")


def blocks(page: str) -> list[Block]:
    text = source(page)
    out = []
    for m in FENCE.finditer(text):
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = MARK.search(before)
        indent = len(m.group("indent"))
        body = "\n".join(line[indent:] for line in m.group("body").splitlines())
        out.append(Block(page, text.count("\n", 0, m.start()) + 1, m.group("lang"), mark and mark.group(1), body))
    return out


def all_blocks() -> list[Block]:
    return [b for p in pages() for b in blocks(p)]
