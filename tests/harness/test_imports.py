"""Imports go one way: faults -> launch -> probe -> oracle -> report, with shared leaves, engine and CLI on top.

Every import in every module is read with `ast` (function-level imports too), so a lazy import that
breaks the direction is caught as well.
"""

from __future__ import annotations

import ast
import os

import pytest

from support import REPO  # noqa: E402

ROOT = os.path.join(REPO, "harness")

#: For each part of the package, the other parts of the harness it must not import.
FORBIDDEN = {
    "trace_schema": {"*"},
    "tensors": {"*"},
    "settings": {"*"},
    "run_env": {"*"},
    "fingerprint": {"probe", "oracle", "engine", "report", "checkpoint", "cli", "pytest_plugin", "scenarios", "fuzz",
                    "certify", "repro"},
    "faults": {"*"},
    "launch": {"probe", "oracle", "engine", "report", "checkpoint", "cli", "pytest_plugin", "scenarios"},
    "probe": {"launch", "oracle", "engine", "report", "checkpoint", "cli", "pytest_plugin", "scenarios"},
    "oracle": {"launch", "probe", "engine", "report", "checkpoint", "cli", "pytest_plugin", "scenarios"},
    "report": {"launch", "probe", "engine", "checkpoint", "cli", "pytest_plugin", "scenarios"},
    "engine": {"report", "cli", "pytest_plugin", "checkpoint", "probe", "fuzz", "certify", "repro"},
    "repro": {"cli", "pytest_plugin", "fuzz", "certify", "probe", "checkpoint"},
    "fuzz": {"cli", "pytest_plugin", "certify", "probe", "checkpoint"},
    "strategies": {"cli", "pytest_plugin", "engine", "fuzz", "certify", "launch", "probe", "checkpoint", "oracle"},
}
ALLOWED_SELF = {"faults": {"faults"}, "trace_schema": set(), "tensors": set(), "settings": set(), "run_env": set()}


def _modules():
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, ROOT).replace(os.sep, "/")
                yield rel.split("/")[0].removesuffix(".py"), path


def _harness_imports(path: str) -> set[str]:
    """The top-level parts of the harness that a file imports (``harness.x.y`` -> ``x``)."""
    tree = ast.parse(open(path).read(), path)
    parts = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + ([f"{node.module}.{a.name}" for a in node.names] if node.module == "harness"
                                     else [])
        else:
            continue
        for name in names:
            bits = name.split(".")
            if bits[0] == "harness" and len(bits) > 1 and bits[1] != "__version__":
                parts.add(bits[1])
    return parts


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_imports_go_one_way(part):
    bad = []
    for owner, path in _modules():
        if owner != part:
            continue
        imported = _harness_imports(path) - {part}
        forbidden = FORBIDDEN[part]
        hits = imported - ALLOWED_SELF.get(part, set()) if "*" in forbidden else imported & forbidden
        bad += [f"{os.path.relpath(path, ROOT)} imports harness.{h}" for h in sorted(hits)]
    assert not bad, "\n".join(bad)


def test_package_init_files_only_re_export():
    """An __init__.py holds a docstring, imports, __all__ and at most a lazy __getattr__ for re-exports."""
    bad = []
    for folder, _, files in os.walk(ROOT):
        if "__init__.py" not in files or os.path.basename(folder) == "scenarios":
            continue
        path = os.path.join(folder, "__init__.py")
        for node in ast.parse(open(path).read()).body:
            ok = isinstance(node, (ast.Import, ast.ImportFrom)) or (
                isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) or (
                isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id in ("__all__", "__version__")
                                                     for t in node.targets)) or (
                isinstance(node, ast.FunctionDef) and node.name == "__getattr__")
            if not ok:
                bad.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} {type(node).__name__}")
    assert not bad, "logic in package __init__ files:\n" + "\n".join(bad)
