"""What ``harness run TARGET`` runs: a built-in scenario (module under ``harness.scenarios``) or a script path.

The scenarios live in the repository's top-level folder ``scenarios/``, installed as the package
``harness.scenarios`` (pyproject.toml ``package-dir``): a regular install copies the folder to
site-packages/harness/scenarios, an editable install maps the package name to the repository folder.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass

SCENARIO_PACKAGE = "harness.scenarios"
# Prefixes a scenario name may carry on the command line: "harness.scenarios.default",
# "harness/scenarios/default", and the old spelling "scenarios/default" (or "scenarios.default").
_NAME_PREFIXES = (SCENARIO_PACKAGE + ".", "scenarios.")
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*([./][A-Za-z][A-Za-z0-9_]*)*\Z")


class UsageError(ValueError):
    """Bad input from the user (unknown target, bad plan, bad option): exit code 2, no traceback.

    ``field``: the ``TrialSpec`` field at fault where there is one (``harness.engine.spec.FLAGS`` maps it
    to its command-line flag), else None."""

    def __init__(self, message: str = "", *, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Target:
    name: str  # scenario name ("buggy/scheduler_not_saved") or the script path as given
    script: str | None = None  # absolute path of a user script
    module: str | None = None  # "harness.scenarios.buggy.scheduler_not_saved"

    @property
    def builtin(self) -> bool:
        return self.module is not None

    @property
    def slug(self) -> str:
        """A file-name-safe short name, for output folders."""
        base = self.name if self.builtin else os.path.splitext(os.path.basename(self.name))[0]
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-") or "run"

    def source_files(self) -> list[tuple[str, str]]:
        """(name, path) of the files whose content defines the run: the cache key hashes them.

        A scenario: every file of the scenarios package. A script: the script and the .py files
        beside it (its local imports).
        """
        if self.builtin:
            root = _package_dir()
            files = []
            for folder, dirs, names in os.walk(root):
                dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
                for name in sorted(names):
                    if not name.endswith((".pyc", ".pyo")) and not name.startswith("."):
                        path = os.path.join(folder, name)
                        files.append((os.path.relpath(path, root), path))
            return files
        folder = os.path.dirname(self.script)
        beside = sorted(n for n in os.listdir(folder) if n.endswith(".py"))
        return [(name, os.path.join(folder, name)) for name in beside]


def _package_dir() -> str | None:
    try:
        spec = importlib.util.find_spec(SCENARIO_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def list_scenarios() -> list[str]:
    """Names of the built-in scenarios: modules of ``harness.scenarios`` whose path has no part starting with '_'."""
    root = _package_dir()
    if root is None:
        return []
    names = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(("_", "."))]
        for f in files:
            if f.endswith(".py") and not f.startswith("_"):
                rel = os.path.relpath(os.path.join(folder, f), root)[:-3]
                names.append(rel.replace(os.sep, "/"))
    return sorted(names)


def _unknown(name: str, why: str) -> UsageError:
    builtins = list_scenarios()
    listing = ", ".join(builtins) if builtins else "(none installed)"
    return UsageError(f"unknown target {name!r}: {why}; give a path to a .py script or a built-in scenario: {listing}")


def resolve_target(name: str) -> Target:
    """A script path (an existing file, or anything ending in .py) or a built-in scenario name."""
    if not name:
        raise _unknown(name, "empty name")
    if name.endswith(".py") or os.path.isfile(name):
        path = os.path.abspath(name)
        if not os.path.isfile(path):
            raise UsageError(f"no such script: {name} (looked at {path})")
        return Target(name=name, script=path)
    if not _NAME_RE.match(name):
        raise _unknown(name, "not a file, and not a scenario name")
    dotted = name.replace("/", ".")
    for prefix in _NAME_PREFIXES:
        if dotted.startswith(prefix):
            dotted = dotted[len(prefix):]
            break
    module = f"{SCENARIO_PACKAGE}.{dotted}"
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.submodule_search_locations is not None:
        raise _unknown(name, "not a file, and no such built-in scenario")
    return Target(name=dotted.replace(".", "/"), module=module)
